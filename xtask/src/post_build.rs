//! `cargo xtask post-build`: Trunk's post-build hook. Moves the inline loader script out of `index.html` into
//! `start.js` so the Content-Security-Policy can forbid inline scripts.

use crate::util::Result;
use std::path::PathBuf;

pub fn run() -> Result {
    let dir =
        PathBuf::from(std::env::var("TRUNK_STAGING_DIR").map_err(|_| "TRUNK_STAGING_DIR is not set (run by trunk)")?);
    let index = dir.join("index.html");
    let html = std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
    let open = "<script type=\"module\">";
    let Some(start) = html.find(open) else { return Ok(()) };
    let body_start = start + open.len();
    let end = html[body_start..].find("</script>").map(|i| body_start + i).ok_or("unterminated inline script")?;
    let script = &html[body_start..end];
    std::fs::write(dir.join("start.js"), script.trim()).map_err(|e| e.to_string())?;
    let out = format!(
        "{}<script type=\"module\" src=\"./start.js\"></script>{}",
        &html[..start],
        &html[end + "</script>".len()..]
    );
    std::fs::write(&index, out).map_err(|e| e.to_string())?;
    Ok(())
}
