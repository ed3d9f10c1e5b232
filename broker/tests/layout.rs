//! The broker's files depend on each other one way: no file imports a file that imports it
//! back, directly or through others (ARCHITECTURE.md, "broker/"). Read from the sources: every
//! `use` and every `crate::`, `super::` and `self::` path of a file, resolved to the file that
//! defines the module it names (a re-export counts as an import of where it comes from; a
//! `mod x;` declaration does not). A cycle fails the test with the files in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`crate::a::b`) of each source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            if parts.last().is_some_and(|l| l == "main") {
                continue; // the binary is its own crate
            }
            let path = std::iter::once("crate".to_string())
                .chain(parts)
                .collect::<Vec<_>>()
                .join("::");
            out.insert(path, p);
        }
    }
    out
}

/// The code of a file without comments and string literals (so that paths in docs or messages
/// do not count).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands one `use` tree (`a::{b, c::{d, e}}`) into full paths.
fn expand_use(tree: &str) -> Vec<String> {
    // Drop renames (`X as Y`), then whitespace.
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut kept = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words[i] == "as" {
            // `as Y,` or `as Y}`: keep the punctuation after the new name.
            let next = words.get(i + 1).copied().unwrap_or("");
            let tail: String = next
                .chars()
                .skip_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            kept.push(tail);
            i += 2;
            continue;
        }
        kept.push(words[i].to_string());
        i += 1;
    }
    let tree: String = kept.concat();
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        if let Some(open) = t.find('{') {
            let head = &t[..open];
            let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
            let mut depth = 0;
            let mut start = 0;
            let base = format!("{prefix}{head}");
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&base, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            go(&base, &inner[start..], out);
        } else if !t.is_empty() {
            out.push(format!("{prefix}{t}"));
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Resolves a path written in module `here` to the module file that defines it.
fn resolve(here: &str, path: &str, mods: &BTreeMap<String, PathBuf>) -> Option<String> {
    let path = path.trim_end_matches("::*").trim_end_matches("::self");
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = here.split("::").map(str::to_string).collect();
    match segs.first().copied() {
        Some("crate") => {
            base = vec!["crate".into()];
            segs.remove(0);
        }
        Some("self") => {
            segs.remove(0);
        }
        Some("super") => {
            while segs.first() == Some(&"super") {
                segs.remove(0);
                base.pop();
            }
        }
        Some(first) => {
            // A bare path names a child module of `here`, or something else (an external
            // crate, a local item): only children count.
            let child = format!("{here}::{first}");
            if !mods.contains_key(&child) {
                return None;
            }
        }
        None => return None,
    }
    let mut full = base;
    full.extend(segs.iter().map(|s| s.to_string()));
    while full.len() > 1 {
        let candidate = full.join("::");
        if mods.contains_key(&candidate) {
            return Some(candidate);
        }
        full.pop();
    }
    None
}

fn imports(here: &str, text: &str, mods: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    // Unit tests (`#[cfg(test)] mod tests`, last in a file by this project's habit) see their
    // module's items through `super::*`: not a dependency of the module itself.
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    let code = code_only(text);
    let mut out = BTreeSet::new();
    // `use` statements (possibly spanning lines).
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let after = &rest[at + 4..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = after.find(';').unwrap_or(after.len());
        for p in expand_use(&after[..end]) {
            if let Some(m) = resolve(here, &p, mods) {
                out.insert(m);
            }
        }
    }
    // Paths used inline.
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            // The character before, looked up in the whole text: `super::super::x` is one path.
            let before = code[..at].chars().last();
            let tail = &code[at..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            from = at + start.len();
            // `a::{...}` is a `use` group, expanded above.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                || tail[..len].ends_with("::")
            {
                continue;
            }
            if let Some(m) = resolve(here, &tail[..len], mods) {
                out.insert(m);
            }
        }
    }
    out.remove(here);
    out
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        on: BTreeSet<&'a str>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_file_of_the_broker_imports_a_file_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut graph = BTreeMap::new();
    for (m, path) in &mods {
        let text = std::fs::read_to_string(path).unwrap();
        graph.insert(m.clone(), imports(m, &text, &mods));
    }
    // The test itself must see imports, or it checks nothing.
    assert!(
        graph["crate::handlers::produce"].contains("crate::runtime::shard")
            || graph["crate::handlers::produce"].contains("crate::runtime"),
        "{:?}",
        graph["crate::handlers::produce"]
    );
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "files that import each other (directly or through the others listed): {found:#?}"
    );
}

#[test]
fn the_parser_expands_use_trees_and_resolves_relative_paths() {
    let mods: BTreeMap<String, PathBuf> = [
        "crate",
        "crate::a",
        "crate::a::b",
        "crate::a::c",
        "crate::d",
    ]
    .iter()
    .map(|m| (m.to_string(), PathBuf::new()))
    .collect();
    let text = "use crate::a::{b::X as W, c::{self, Y}};\nuse super::super::d::Z;\nfn f() { crate::d::g(); \"crate::a::c\"; }\n// crate::a\nuse std::rc::Rc;";
    let got = imports("crate::a::b", text, &mods);
    let want: BTreeSet<String> = ["crate::a::c", "crate::d"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
    let mut g = BTreeMap::new();
    g.insert("x".to_string(), BTreeSet::from(["y".to_string()]));
    g.insert("y".to_string(), BTreeSet::from(["z".to_string()]));
    g.insert("z".to_string(), BTreeSet::from(["x".to_string()]));
    g.insert("w".to_string(), BTreeSet::from(["x".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["x", "y", "z"]]);
}
