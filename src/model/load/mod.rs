//! Loading, in one place: [`LoadOptions`], the spec dispatcher
//! ([`HookedTransformer::from_spec`](crate::model::HookedTransformer::from_spec)) and one
//! reader per source: Hugging Face checkpoints from the hub or a folder (`hub`, `checkpoint`,
//! [`hf_config`], `safetensors`), GGUF files ([`gguf`]) and Ollama's store ([`ollama`]). Every
//! reader maps its file onto the one [`Config`](crate::model::Config) through the family facts
//! of [`Arch`](crate::model::arch::Arch), and its tensors through [`weights`].

mod checkpoint;
pub mod gguf;
pub mod hf_config;
mod hub;
pub mod ollama;
mod options;
mod safetensors;
mod spec;
pub mod weights;

pub use hub::{hub_getter, hub_offline, HubGetter};
pub use options::LoadOptions;
