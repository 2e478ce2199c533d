//! `cargo xtask post-build`: Trunk's post-build hook.
//!
//! - Moves the inline loader script out of `index.html` into `start.js` so the Content-Security-Policy can forbid
//!   inline scripts.
//! - In release builds, shrinks the wasm further than Trunk's `wasm-opt -Oz` ([`shrink`]), gives its imports and
//!   exports one- or two-letter names ([`minify_names`]), minifies the JavaScript glue ([`minify_glue`]) and the
//!   app's other scripts, its stylesheet and `index.html` ([`minify_assets`]).

use crate::util::{tool, Result};
use base64::Engine;
use sha2::{Digest, Sha384};
use std::path::{Path, PathBuf};

pub fn run() -> Result {
    let dir =
        PathBuf::from(std::env::var("TRUNK_STAGING_DIR").map_err(|_| "TRUNK_STAGING_DIR is not set (run by trunk)")?);
    move_loader(&dir)?;
    if std::env::var("TRUNK_PROFILE").is_ok_and(|p| p == "release") {
        shrink(&dir)?;
        minify_names(&dir)?;
        minify_assets(&dir)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn move_loader(dir: &Path) -> Result {
    let index = dir.join("index.html");
    let html = read(&index)?;
    let open = "<script type=\"module\">";
    let Some(start) = html.find(open) else { return Ok(()) };
    let body_start = start + open.len();
    let end = html[body_start..].find("</script>").map(|i| body_start + i).ok_or("unterminated inline script")?;
    let script = &html[body_start..end];
    write(&dir.join("start.js"), script.trim())?;
    let out = format!(
        "{}<script type=\"module\" src=\"./start.js\"></script>{}",
        &html[..start],
        &html[end + "</script>".len()..]
    );
    write(&index, &out)
}

/// After Trunk's `wasm-opt -Oz`, measured on 2026-11-30 on the wasm alone (gzip -9), about 12 s:
/// - `--flatten --rereloop -Oz -Oz`: the control flow rustc wrote rebuilt by binaryen's Relooper, then two more
///   rounds find more to merge: 1.8 KB less (a second such round: 0.3 KB more for twice the time);
/// - `--low-memory-unused`: binaryen may assume the first 1 KiB of memory is never accessed and fold constant
///   offsets into the loads and stores: 1.8 KB less on top. It holds for this wasm: rustc links the stack first,
///   from 1 MiB down to 0 (the data follow it), so only a stack 1 023 KiB deep reaches that KiB, and wasm32 has
///   no guard page: such a stack would already overwrite memory. (Emscripten passes the same flag by default.)
/// - `--strip-producers`: the toolchain names, 0.1 KB.
fn shrink(dir: &Path) -> Result {
    let wasm = the_wasm(dir)?;
    let passes = ["--low-memory-unused", "--flatten", "--rereloop", "-Oz", "-Oz", "--strip-producers"];
    crate::util::run(tool("wasm-opt").args(passes).arg(&wasm).arg("-o").arg(&wasm))
}

/// The one `*_bg.wasm` of the build.
fn the_wasm(dir: &Path) -> Result<PathBuf> {
    let mut wasm_files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.to_string_lossy().ends_with("_bg.wasm") {
            wasm_files.push(p);
        }
    }
    match wasm_files.as_slice() {
        [wasm] => Ok(wasm.clone()),
        _ => Err(format!("post-build: expected one *_bg.wasm in {}, found {}", dir.display(), wasm_files.len())),
    }
}

/// wasm-bindgen names every import after the JavaScript it calls plus a 16-digit hash
/// (`__wbg_setAttribute_c3b1d2e0a7f94b1c`), and closure shims after their full Rust path; each name is written
/// twice, in the wasm and in its JavaScript glue, and the hashes do not compress. Binaryen's
/// `--minify-imports-and-exports-and-modules` (the pass Emscripten uses) renames them all to one or two letters
/// and prints the mapping, which this applies to the glue: the import object's keys, its module name and every
/// `wasm.<export>`. Measured on 2026-11-29: 5.4 KB less gzipped (BENCHMARKS.md). Then the two files' integrity
/// hashes in `index.html` are recomputed. Any name the mapping gives that the glue does not hold exactly as
/// expected fails the build (never a half-renamed app).
fn minify_names(dir: &Path) -> Result {
    let wasm = &the_wasm(dir)?;
    let name = wasm.file_name().and_then(|n| n.to_str()).ok_or("wasm file name")?;
    let js = dir.join(format!("{}.js", name.trim_end_matches("_bg.wasm")));
    let out = tool("wasm-opt")
        .arg("--minify-imports-and-exports-and-modules")
        .arg(wasm)
        .arg("-o")
        .arg(wasm)
        .output()
        .map_err(|e| format!("wasm-opt: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "wasm-opt --minify-imports-and-exports-and-modules: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let map: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("wasm-opt's name mapping: {e}"))?;
    let glue = rename_in_glue(&read(&js)?, &map, &import_module(wasm)?)?;
    write(&js, &glue)?;
    minify_glue(&js)?;
    let index = dir.join("index.html");
    let mut html = read(&index)?;
    for file in [wasm.as_path(), js.as_path()] {
        html = set_integrity(&html, file)?;
    }
    write(&index, &html)
}

/// Minifies the glue with terser (`xtask/minify`, installed by `setup`), as an ES module: its exports keep their
/// names (the page's loader and the benchmark read them), everything inside is compressed and renamed.
/// Measured on 2026-11-29: 5.3 → 3.7 KB gzipped.
fn minify_glue(js: &Path) -> Result {
    terser(js, true)
}

/// Minifies `js` in place with terser (`xtask/minify`, installed by `setup`), as an ES module when `module`.
fn terser(js: &Path, module: bool) -> Result {
    let terser = crate::util::root().join("xtask/minify/node_modules/terser/bin/terser");
    let module = if module { &["--module"][..] } else { &[] };
    crate::util::run(tool("node").arg(terser).arg(js).args(module).args(["--compress", "--mangle", "-o"]).arg(js))
}

/// Minifies what `index.html` loads beside the wasm and its glue, and recomputes their integrity: the plain
/// scripts (`static/ui.js`, whose comments are most of it) with terser, the stylesheet with Lightning CSS
/// (`xtask/minify`, pinned). Then drops the comments of `index.html` itself (notes for whoever edits the source
/// `index.html`). Measured on 2026-11-30: 0.5 KB less gzipped for the CSS and the HTML.
fn minify_assets(dir: &Path) -> Result {
    let lightningcss = crate::util::root().join("xtask/minify/node_modules/.bin/lightningcss");
    let index = dir.join("index.html");
    let mut html = read(&index)?;
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let glue = dir.join(name.replace(".js", "_bg.wasm")).exists();
        if name.ends_with(".js") && name != "start.js" && !glue {
            terser(&p, false)?;
        } else if name.ends_with(".css") {
            crate::util::run(tool(&lightningcss.to_string_lossy()).arg("--minify").arg(&p).arg("-o").arg(&p))?;
        } else {
            continue;
        }
        html = set_integrity(&html, &p)?;
    }
    write(&index, &strip_comments(&html))
}

/// `html` without its `<!-- … -->` comments and the blank lines they leave.
fn strip_comments(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        match rest[i..].find("-->") {
            Some(j) => rest = &rest[i + j + 3..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    let mut lines = String::with_capacity(out.len());
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        lines.push_str(line);
        lines.push('\n');
    }
    lines
}

/// The module name of the wasm's imports after minification (one module: wasm-bindgen imports from its glue).
fn import_module(wasm: &Path) -> Result<String> {
    let bytes = std::fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let mut modules = std::collections::BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::ImportSection(imports) = payload.map_err(|e| e.to_string())? {
            for i in imports.into_imports() {
                modules.insert(i.map_err(|e| e.to_string())?.module.to_owned());
            }
        }
    }
    let mut it = modules.into_iter();
    match (it.next(), it.next()) {
        (Some(m), None) => Ok(m),
        _ => Err("post-build: expected the wasm to import from exactly one module".into()),
    }
}

/// Applies wasm-opt's mapping (`{"imports": [[module, name, new]], "exports": [[name, new]]}`) to wasm-bindgen's
/// glue: each import is one key `name:` of the import object (quoted as `"new":`), the module is one quoted key,
/// and each export is read as `wasm.name`.
fn rename_in_glue(glue: &str, map: &serde_json::Value, new_module: &str) -> Result<String> {
    let mut glue = glue.to_owned();
    let entries = |key: &str| map[key].as_array().cloned().ok_or(format!("wasm-opt's mapping has no {key}"));
    let mut old_module = None;
    for i in entries("imports")? {
        let (Some(module), Some(name), Some(new)) = (i[0].as_str(), i[1].as_str(), i[2].as_str()) else {
            return Err(format!("wasm-opt's mapping: unexpected import entry {i}"));
        };
        old_module.get_or_insert(module.to_owned());
        let key = format!("{name}:");
        if glue.matches(&key).count() != 1 {
            return Err(format!("post-build: the import {name} is not one key of the glue's import object"));
        }
        glue = glue.replacen(&key, &format!("{}:", serde_json::Value::from(new)), 1);
    }
    if let Some(module) = old_module {
        let quoted = serde_json::Value::from(module.as_str()).to_string();
        if glue.matches(&quoted).count() != 1 {
            return Err(format!("post-build: the module {quoted} is not named once in the glue"));
        }
        glue = glue.replacen(&quoted, &serde_json::Value::from(new_module).to_string(), 1);
    }
    for e in entries("exports")? {
        let (Some(name), Some(new)) = (e[0].as_str(), e[1].as_str()) else {
            return Err(format!("wasm-opt's mapping: unexpected export entry {e}"));
        };
        glue = replace_member(&glue, &format!("wasm.{name}"), &format!("wasm.{new}"));
    }
    Ok(glue)
}

/// Replaces `from` where it is a whole member access (not followed by another identifier character).
fn replace_member(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        let whole = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        out.push_str(&rest[..i]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Sets the `integrity` of the one `<link>` or `<script>` of `index.html` whose `href` or `src` is `./{file name}`.
fn set_integrity(html: &str, file: &Path) -> Result<String> {
    let name = file.file_name().and_then(|n| n.to_str()).ok_or("file name")?;
    let at = [format!("href=\"./{name}\""), format!("src=\"./{name}\"")]
        .iter()
        .find_map(|attr| html.find(attr.as_str()))
        .ok_or(format!("post-build: index.html does not link {name}"))?;
    let tag_start = html[..at].rfind('<').ok_or("index.html: tag start")?;
    let tag_end = at + html[at..].find('>').ok_or("index.html: tag end")?;
    let tag = &html[tag_start..tag_end];
    let attr = "integrity=\"";
    let Some(i) = tag.find(attr) else { return Ok(html.to_owned()) };
    let value_start = tag_start + i + attr.len();
    let value_end = value_start + html[value_start..].find('"').ok_or("index.html: integrity value")?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha384::digest(&bytes));
    Ok(format!("{}sha384-{digest}{}", &html[..value_start], &html[value_end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glue_takes_the_mapping_or_the_build_fails() {
        let glue = "const import0 = {\n __wbg_set_0a1b: function(a) {},\n __wbg_get_9f8e: function() {},\n};\n\
                    return { \"./app_bg.js\": import0 };\nwasm.memory.buffer; wasm.__wbindgen_malloc(1); \
                    wasm.__wbindgen_malloc_extra(2);";
        let map = serde_json::json!({
            "imports": [["./app_bg.js", "__wbg_set_0a1b", "a"], ["./app_bg.js", "__wbg_get_9f8e", "$"]],
            "exports": [["memory", "b"], ["__wbindgen_malloc", "c"]],
        });
        let out = rename_in_glue(glue, &map, "a").unwrap();
        assert_eq!(
            out,
            "const import0 = {\n \"a\": function(a) {},\n \"$\": function() {},\n};\nreturn { \"a\": import0 };\n\
             wasm.b.buffer; wasm.c(1); wasm.__wbindgen_malloc_extra(2);"
        );
        // A name the glue does not hold as one key: an error, not a half-renamed app.
        let missing = serde_json::json!({"imports": [["./app_bg.js", "__wbg_nope", "a"]], "exports": []});
        assert!(rename_in_glue(glue, &missing, "a").is_err());
    }

    #[test]
    fn comments_leave_index_html() {
        let html = "<head>\n  <!-- a note\n  on two lines -->\n  <meta a=\"b\" />\n<!--x--></head>\n";
        assert_eq!(strip_comments(html), "<head>\n  <meta a=\"b\" />\n</head>\n");
        // An unterminated comment ends the document, as in HTML.
        assert_eq!(strip_comments("<p>a</p><!-- b"), "<p>a</p>\n");
    }

    #[test]
    fn integrity_is_recomputed_for_the_linked_file() {
        let dir = std::env::temp_dir().join(format!("xtask-post-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("app.js");
        std::fs::write(&file, "abc").unwrap();
        let html = "<link rel=\"modulepreload\" href=\"./app.js\" integrity=\"sha384-old\"><link href=\"./x.css\" integrity=\"sha384-keep\">";
        let out = set_integrity(html, &file).unwrap();
        // sha384("abc"), RFC 6234's test vector, in base64.
        assert_eq!(
            out,
            "<link rel=\"modulepreload\" href=\"./app.js\" integrity=\"sha384-ywB1P0WjXou1oD1pmsZQBycsMqsO3tFjGotgWkP/W+2AhgcroefMI1i67KE0yCWn\"><link href=\"./x.css\" integrity=\"sha384-keep\">"
        );
        // A script is found by its `src`.
        let html = "<script src=\"./app.js\" defer integrity=\"sha384-old\"></script>";
        assert_eq!(
            set_integrity(html, &file).unwrap(),
            "<script src=\"./app.js\" defer integrity=\"sha384-ywB1P0WjXou1oD1pmsZQBycsMqsO3tFjGotgWkP/W+2AhgcroefMI1i67KE0yCWn\"></script>"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
