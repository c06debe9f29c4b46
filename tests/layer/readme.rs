//! docs/security.md lists every rejection with its status and code, as the one table in the
//! crate defines them; and no snippet in README.md, the guides under docs/ or the API docs holds
//! a secret the crate accepts.

use ringyo_webhook::RejectionKind;

#[test]
fn security_guide_lists_every_rejection_with_its_status_and_code() {
    let guide = include_str!("../../docs/security.md");
    for kind in RejectionKind::ALL {
        let row = format!("| {} | `{}` |", kind.status().as_u16(), kind.code());
        assert!(
            guide.contains(&row),
            "docs/security.md has no row `{row}` for {kind:?}"
        );
    }
}

/// No snippet a reader may copy holds a secret the crate would take: a `"whsec_..."` literal
/// copied into a service lets in anyone who signs with that public string. Scanned: the Rust
/// blocks of README and of the guides under docs/ (all lines: GitHub shows a doctest's hidden ones) and the Rust blocks of the API
/// docs in `src/` and the receiver's `receiver/src/` (the lines rustdoc shows). Test code is
/// exempt: README and guide lines after a `#[test]` attribute, and `src/testing/`, which exists only with
/// the `test-util` feature.
#[test]
fn no_snippet_holds_a_secret_that_would_be_accepted() {
    let mut live = Vec::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path);
        }
    }
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let shown = page.strip_prefix(root).unwrap().display();
        for (number, line) in rust_block_lines(text.lines(), false) {
            live.extend(live_secrets(line).map(|secret| format!("{shown}:{number}: {secret}")));
        }
    }
    let mut files = Vec::new();
    for dir in ["src", "receiver/src"] {
        rust_files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            &mut files,
        );
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs = text.lines().map(|line| {
            let line = line.trim_start();
            line.strip_prefix("///")
                .or_else(|| line.strip_prefix("//!"))
                .map_or("", |doc| doc.strip_prefix(' ').unwrap_or(doc))
        });
        for (number, line) in rust_block_lines(docs, true) {
            let shown = file.display();
            live.extend(live_secrets(line).map(|secret| format!("{shown}:{number}: {secret}")));
        }
    }
    assert!(
        live.is_empty(),
        "snippets that hold an accepted secret (read it from the environment or a file):\n{}",
        live.join("\n")
    );
}

/// The lines inside Rust code blocks of `lines` (Markdown), with their 1-based numbers, but
/// not test code: lines after a `#[test]` or `#[tokio::test]` in the block, and, when
/// `rustdoc`, the hidden `# ` lines rustdoc does not show.
fn rust_block_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    rustdoc: bool,
) -> Vec<(usize, &'a str)> {
    let (mut in_rust, mut in_block, mut in_test) = (false, false, false);
    let mut found = Vec::new();
    for (index, line) in lines.enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            // In rustdoc a fence with no language, or with only test attributes, is Rust.
            let lang = info.split(',').next().unwrap_or_default().trim();
            let rustdoc_rust = matches!(lang, "" | "no_run" | "ignore" | "should_panic");
            in_rust = !in_block && (lang.starts_with("rust") || (rustdoc && rustdoc_rust));
            in_block = !in_block;
            in_test = false;
            continue;
        }
        in_test |= line.contains("#[test]") || line.contains("#[tokio::test");
        let hidden = rustdoc && (line.trim_start() == "#" || line.trim_start().starts_with("# "));
        if in_rust && !in_test && !hidden {
            found.push((index + 1, line));
        }
    }
    found
}

/// The `"whsec_..."` string literals on `line` that `Verifier::new` accepts.
fn live_secrets(line: &str) -> impl Iterator<Item = String> + '_ {
    line.match_indices("\"whsec_").filter_map(|(at, _)| {
        let rest = &line[at + 1..];
        let literal = &rest[..rest.find('"')?];
        let secret = literal
            .replace("\\n", "\n")
            .replace("\\r", "\r")
            .replace("\\t", "\t");
        ringyo_webhook::Verifier::new(&secret)
            .is_ok()
            .then(|| format!("\"{literal}\""))
    })
}

/// Every `.rs` file under `dir`, but `src/testing/`.
fn rust_files(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("src/testing") {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}
