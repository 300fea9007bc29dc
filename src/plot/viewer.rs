//! An offline, self-contained interactive attention viewer (HTML with inline CSS and JS, no
//! network): hover a token to see where it attends, or which later tokens attend to it, for
//! the head chosen in a selector. The CircuitsVis `attention_heads` experience, in one cell.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// A self-contained HTML fragment.
#[derive(Debug, Clone, PartialEq)]
pub struct Html {
    html: String,
}

impl Html {
    /// The HTML text.
    pub fn html(&self) -> &str {
        &self.html
    }

    /// Writes a standalone page.
    pub fn save_html(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let p = path.as_ref();
        let page = format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>attention</title></head><body>\n{}\n</body></html>\n", self.html);
        std::fs::write(p, page).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    }

    /// Shows the viewer inline in an evcxr notebook cell.
    pub fn evcxr_display(&self) {
        println!(
            "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
            self.html
        );
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The viewer for `tokens` and a pattern of one layer: [n_heads, q, k], [1, n_heads, q, k]
/// (as cached) or one head's [q, k]. Heads are named 0..n; `initial` optionally selects a
/// (head, token) to show before any hover.
pub fn attention_view(tokens: &[String], pattern: &Tensor) -> Result<Html> {
    attention_view_with(tokens, pattern, None, "")
}

/// [`attention_view`] with an initial (head, token) selection and a title.
pub fn attention_view_with(
    tokens: &[String],
    pattern: &Tensor,
    initial: Option<(usize, usize)>,
    title: &str,
) -> Result<Html> {
    let mut p = pattern.to_dtype(DType::F32)?;
    while p.rank() > 3 && p.dim(0)? == 1 {
        p = p.squeeze(0)?;
    }
    if p.rank() == 2 {
        p = p.unsqueeze(0)?;
    }
    let (n, q, k) = p.dims3().map_err(|_| {
        Error::Shape(format!(
            "attention_view needs [n_heads, q, k], got {:?}",
            pattern.dims()
        ))
    })?;
    if q != tokens.len() || k != tokens.len() {
        return Err(Error::Shape(format!(
            "pattern is [{n}, {q}, {k}] but there are {} tokens",
            tokens.len()
        )));
    }
    let vals = p.to_vec3::<f32>()?;
    let rounded: Vec<Vec<Vec<f32>>> = vals
        .iter()
        .map(|h| {
            h.iter()
                .map(|r| r.iter().map(|x| (x * 1e4).round() / 1e4).collect())
                .collect()
        })
        .collect();
    let data = serde_json::json!({
        "tokens": tokens,
        "pattern": rounded,
        "head": initial.map_or(0, |x| x.0.min(n - 1)),
        "selected": initial.map(|x| x.1.min(q - 1)),
    });
    // "</" inside a script would end it early; JSON never needs it.
    let data = data.to_string().replace("</", "<\\/");
    let id = format!(
        "mi-attn-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let options: String = (0..n)
        .map(|h| format!("<option value=\"{h}\">head {h}</option>"))
        .collect();
    let title = super::esc(title);
    let html = format!(
        r##"<div id="{id}" class="mi-attn">
<style>
#{id} {{ font-family: system-ui, sans-serif; font-size: 14px; max-width: 980px; }}
#{id} .bar {{ display: flex; gap: 14px; align-items: center; margin-bottom: 8px; flex-wrap: wrap; }}
#{id} .toks {{ line-height: 2.1; }}
#{id} .tok {{ display: inline-block; padding: 0 3px; margin: 1px; border-radius: 3px; border: 1px solid #ddd; white-space: pre; cursor: default; }}
#{id} .tok.sel {{ outline: 2px solid #222; }}
#{id} .info {{ margin-top: 8px; color: #444; min-height: 1.4em; }}
#{id} .title {{ font-weight: 600; }}
</style>
<div class="bar"><span class="title">{title}</span>
<label>Head <select class="head">{options}</select></label>
<label><input type="radio" name="{id}-mode" value="to" checked> where it attends</label>
<label><input type="radio" name="{id}-mode" value="from"> who attends to it</label></div>
<div class="toks"></div>
<div class="info">Hover a token.</div>
<script>
(function() {{
  const root = document.getElementById("{id}");
  const data = {data};
  const toks = root.querySelector(".toks"), info = root.querySelector(".info"), sel = root.querySelector(".head");
  let head = data.head, current = data.selected;
  sel.value = String(head);
  const show = s => s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192");
  const spans = data.tokens.map((t, i) => {{
    const s = document.createElement("span");
    s.className = "tok"; s.textContent = show(t); s.dataset.i = i; s.title = "position " + i;
    s.addEventListener("mouseenter", () => {{ current = i; paint(); }});
    toks.appendChild(s); return s;
  }});
  const mode = () => root.querySelector('input[name="{id}-mode"]:checked').value;
  function paint() {{
    const p = data.pattern[head];
    spans.forEach(s => {{ s.style.background = ""; s.classList.remove("sel"); }});
    if (current === null || current === undefined) return;
    const i = current, m = mode();
    spans[i].classList.add("sel");
    let best = -1, bestv = -1;
    spans.forEach((s, j) => {{
      const v = m === "to" ? (j <= i ? p[i][j] : 0) : (j >= i ? p[j][i] : 0);
      const rgb = m === "to" ? "33,113,181" : "217,72,1";
      if (v > 0) s.style.background = "rgba(" + rgb + "," + Math.min(1, v).toFixed(3) + ")";
      if (v > bestv) {{ bestv = v; best = j; }}
    }});
    const what = m === "to" ? "attends most to" : "is attended to most by";
    info.textContent = "head " + head + ": " + JSON.stringify(data.tokens[i]) + " (" + i + ") " + what + " "
      + JSON.stringify(data.tokens[best]) + " (" + best + "), " + bestv.toFixed(3);
  }}
  sel.addEventListener("change", () => {{ head = Number(sel.value); paint(); }});
  root.querySelectorAll('input[name="{id}-mode"]').forEach(r => r.addEventListener("change", paint));
  paint();
}})();
</script>
</div>"##
    );
    Ok(Html { html })
}
