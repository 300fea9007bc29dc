//! Everything a notebook needs, in one `use mechinterp::prelude::*;`.

pub use crate::cache::ActivationCache;
pub use crate::error::{Error, Result};
pub use crate::fetch::{default_model_path, fetch_default_model, FetchOptions};
pub use crate::hooks::{act_name, BoxedHook, HookContext, HookPoint, Hooks, Intervention};
pub use crate::model::{Activation, Config, HookedTransformer, LoadOptions};
pub use crate::tokenizer::Tokenizer;
pub use candle_core::{DType, Device, IndexOp, Tensor, D};
