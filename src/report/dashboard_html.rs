//! Feature dashboards as one offline HTML page (`mechinterp sae dashboard` writes it): every
//! latent's card in one file, CSS and SVG inline, no script, nothing fetched from the network;
//! written as XHTML-compatible HTML5, so that an XML parser reads it too.

use std::path::Path;

use crate::error::{Error, Result};
use crate::sae::dashboard::Dashboards;

/// The whole page; `title` heads it (e.g. the SAE's folder).
pub fn dashboard_page(d: &Dashboards, title: &str) -> Result<String> {
    let title = escape(title);
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>{title}</title>\n<style>body {{ margin: 18px 24px; background: #fafafa; }} h1 {{ font-family: system-ui, sans-serif; font-size: 20px; margin: 0 0 4px; }}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{}\n</body>\n</html>\n",
        d.html()?
    ))
}

/// Writes [`dashboard_page`] to `path`.
pub fn write_dashboard_page(d: &Dashboards, title: &str, path: impl AsRef<Path>) -> Result<()> {
    let p = path.as_ref();
    std::fs::write(p, dashboard_page(d, title)?)
        .map_err(|e| Error::io(format!("writing the dashboard page {}", p.display()), e))
}

/// Escapes text for HTML content.
pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
