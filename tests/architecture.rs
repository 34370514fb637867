//! The architecture, checked: the module graph of `src/` read from its
//! paths, and the rules a forker can rely on (issue #12).
//!
//! Every file under `src/` is one node (`src/auth/routes.rs` is
//! `auth::routes`, `src/auth/mod.rs` is `auth`). An edge `a -> b` means a
//! path in `a` names an item of `b`: `use crate::…` trees, `crate::…`,
//! `super::…` and `self::…` paths anywhere in the code, a child module's
//! name used as a path (`db::find_by_id` in `accounts/mod.rs`), and
//! `"crate::…"` function paths in attributes. A path is resolved to the
//! longest module prefix it names, through re-exports (`crate::crypto::Aad`
//! is `crypto::aead`); `mod x;` declarations and `pub use` re-exports are
//! not edges of the module declaring them.
//! Comments and other string literals are skipped by a small hand-written
//! scanner (no parser dependency). `src/main.rs` is the node `main`, its
//! `mobile_backend::…` paths read as `crate::…`.
//!
//! The rules:
//! - a leaf module (crypto, audit, tokens, clock, error, background)
//!   imports no feature module and not `http`;
//! - neither does the floor (config), which every module reads: the value
//!   types it parses (a quota, a rate-limit class, the proxy header) are
//!   defined in it and re-exported by the features that act on them;
//! - a feature module imports neither `startup` nor `main`;
//! - the graph has no cycle (each one found is reported, file by file).
//!
//! And one rule of the route table: every handler function is named after
//! its `operationId` (`ApiRouter::route` records the handler's name). And
//! one of the SQL: "MFA is on" is spelled one way (`mfa::db::mfa_enabled`).
//!
//! A separate test binary: it reads files only and needs no database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

const LEAVES: &[&str] = &["crypto", "audit", "tokens", "clock", "error", "background"];
const FEATURES: &[&str] = &[
    "auth",
    "accounts",
    "sessions",
    "mfa",
    "profile",
    "devices",
    "notes",
    "admin",
    "alerts",
    "mail",
    "rate_limit",
    "rate_limit_requests",
    "dpop",
    "attestation",
];
/// The floor: configuration, read by every layer. The same rule as a leaf.
/// (`state` is not on it: `AppState` holds the features' services, the
/// limiter, the outbox, the hasher, so it names them by design.)
const FLOOR: &[&str] = &["config"];
/// What a feature must never import.
const ENTRY_POINTS: &[&str] = &["startup", "main"];

/// Known exceptions to the leaf and floor rule, as (importing module,
/// imported module). Empty: keep it so. An entry needs a comment and a TODO naming
/// the issue that removes it. (Cycles have no allow-list at all.)
const LEAF_ALLOW: &[(&str, &str)] = &[];

type Module = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    /// The text of a string literal that reads as a `crate::` path.
    PathString(String),
    Punct(char),
}

/// Splits Rust source into identifiers, `::` and punctuation, skipping
/// whitespace, comments, numbers, lifetimes, char and string literals.
fn tokenize(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            let text: String = b[start..i.min(b.len())].iter().collect();
            if text.starts_with("crate::")
                && text
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                out.push(Tok::PathString(text));
            }
            i += 1;
        } else if (c == 'r' || c == 'b')
            && matches!(next, Some('#') | Some('"'))
            && (c == 'r' || next == Some('"'))
            && !prev_is_ident(&b, i)
        {
            // r"…", r#"…"#, b"…" (br"…" reaches here as the 'r').
            if c == 'b' {
                i += 1; // now at the quote; the plain-string branch takes it
                continue;
            }
            i += 1;
            let mut hashes = 0;
            while b.get(i) == Some(&'#') {
                hashes += 1;
                i += 1;
            }
            if b.get(i) != Some(&'"') {
                // `r#ident`, a raw identifier.
                continue;
            }
            i += 1;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 3;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '.') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The module of a file under `src/`.
fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A path a file names, absolute (not yet resolved to a module), and the
/// name it is re-exported under when it is a `pub use`.
type Named = (Vec<String>, Option<String>);

/// Every path a file names. `file_module` is the file's own module.
fn paths_of(tokens: &[Tok], file_module: &Module, modules: &BTreeSet<Module>) -> Vec<Named> {
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let current = |inline: &Vec<(String, usize)>| -> Module {
        let mut m = file_module.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    while i < tokens.len() {
        match &tokens[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(kw) if kw == "mod" => {
                // `mod x;` declares (no edge); `mod x {` opens an inline module.
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                } else {
                    i += 2;
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let here = current(&inline);
                // `pub use` / `pub(crate) use`: a re-export.
                let public = i > 0
                    && (tokens[i - 1] == Tok::Ident("pub".into())
                        || (tokens[i - 1] == Tok::Punct(')')
                            && i >= 4
                            && tokens[i - 4] == Tok::Ident("pub".into())));
                let mut j = i + 1;
                let mut found = Vec::new();
                use_tree(tokens, &mut j, Vec::new(), &mut found);
                for (p, leaf) in found {
                    if let Some(abs) = absolute(&p, &here, modules) {
                        out.push((abs, public.then_some(leaf)));
                    }
                }
                i = j;
            }
            Tok::PathString(text) => {
                let p: Vec<String> = text.split("::").map(str::to_owned).collect();
                if let Some(abs) = absolute(&p, &current(&inline), modules) {
                    out.push((abs, None));
                }
                i += 1;
            }
            Tok::Ident(first)
                if tokens.get(i + 1) == Some(&Tok::PathSep)
                    && !(i > 0 && tokens[i - 1] == Tok::PathSep) =>
            {
                let mut p = vec![first.clone()];
                let mut j = i + 1;
                while tokens.get(j) == Some(&Tok::PathSep) {
                    match tokens.get(j + 1) {
                        Some(Tok::Ident(s)) => {
                            p.push(s.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if let Some(abs) = absolute(&p, &current(&inline), modules) {
                    out.push((abs, None));
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// Reads one use tree at `*j` (after `use` or inside braces), pushing each
/// leaf path (prefix included) and the name it binds into `found`; stops
/// after the tree.
fn use_tree(
    tokens: &[Tok],
    j: &mut usize,
    mut prefix: Vec<String>,
    found: &mut Vec<(Vec<String>, String)>,
) {
    if tokens.get(*j) == Some(&Tok::PathSep) {
        *j += 1; // `use ::std::…`
    }
    loop {
        match tokens.get(*j) {
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                *j += 1;
                if tokens.get(*j) == Some(&Tok::PathSep) {
                    *j += 1;
                } else {
                    // `as alias` or the end of this tree.
                    let mut bound = s.clone();
                    if s == "self" && prefix.len() >= 2 {
                        bound = prefix[prefix.len() - 2].clone();
                    }
                    if tokens.get(*j) == Some(&Tok::Ident("as".into())) {
                        if let Some(Tok::Ident(alias)) = tokens.get(*j + 1) {
                            bound = alias.clone();
                        }
                        *j += 2;
                    }
                    found.push((prefix, bound));
                    if tokens.get(*j) == Some(&Tok::Punct(';')) {
                        *j += 1;
                    }
                    return;
                }
            }
            Some(Tok::Punct('*')) => {
                *j += 1;
                found.push((prefix, "*".to_owned()));
                if tokens.get(*j) == Some(&Tok::Punct(';')) {
                    *j += 1;
                }
                return;
            }
            Some(Tok::Punct('{')) => {
                *j += 1;
                loop {
                    match tokens.get(*j) {
                        Some(Tok::Punct('}')) => {
                            *j += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => *j += 1,
                        None => return,
                        _ => use_tree(tokens, j, prefix.clone(), found),
                    }
                }
                if tokens.get(*j) == Some(&Tok::Punct(';')) {
                    *j += 1;
                }
                return;
            }
            _ => return,
        }
    }
}

/// The absolute path a path written in module `here` names, or `None` when
/// it names something outside the crate (std, a dependency, a local item).
fn absolute(p: &[String], here: &Module, modules: &BTreeSet<Module>) -> Option<Vec<String>> {
    let first = p.first()?;
    match first.as_str() {
        "crate" | "mobile_backend" => Some(p[1..].to_vec()),
        "self" => {
            let mut m = here.clone();
            m.extend(p[1..].iter().cloned());
            Some(m)
        }
        "super" => {
            let mut m = here.clone();
            let mut k = 0;
            while p.get(k).is_some_and(|s| s == "super") {
                m.pop();
                k += 1;
            }
            m.extend(p[k..].iter().cloned());
            Some(m)
        }
        _ => {
            // A child module of `here` named without `self::`.
            let mut child = here.clone();
            child.push(first.clone());
            if modules.contains(&child) {
                let mut m = here.clone();
                m.extend(p.iter().cloned());
                Some(m)
            } else {
                None
            }
        }
    }
}

/// Re-exports: (module, name) -> the path that `pub use` names.
type Reexports = BTreeMap<(Module, String), Vec<String>>;

/// The longest known module that `path` starts with (the crate root
/// excluded), following re-exports (`crate::crypto::Aad`, re-exported by
/// `crypto/mod.rs`, is `crypto::aead`).
fn resolve(path: &[String], modules: &BTreeSet<Module>, reexports: &Reexports) -> Option<Module> {
    let mut path = path.to_vec();
    for _ in 0..8 {
        let m = (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains(m))?;
        let Some(next) = path.get(m.len()) else {
            return Some(m);
        };
        match reexports.get(&(m.clone(), next.clone())) {
            Some(target) => {
                let mut p = target.clone();
                p.extend(path[m.len() + 1..].iter().cloned());
                path = p;
            }
            None => return Some(m),
        }
    }
    None
}

fn name(m: &Module) -> String {
    m.join("::")
}

/// The module graph of `src/`: file module -> the file modules it names.
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_for = |f: &PathBuf| -> Module {
        let rel = f.strip_prefix(&src).unwrap();
        if rel == Path::new("main.rs") {
            vec!["main".to_owned()]
        } else {
            module_of(rel)
        }
    };
    let modules: BTreeSet<Module> = files.iter().map(module_for).collect();
    let mut named = Vec::new();
    let mut reexports = Reexports::new();
    for f in &files {
        let m = module_for(f);
        let tokens = tokenize(&fs::read_to_string(f).unwrap());
        // main.rs is its own crate: its `crate::` is not the library.
        let own = if m == ["main"] { Vec::new() } else { m.clone() };
        let paths = paths_of(&tokens, &own, &modules);
        for (p, exported) in &paths {
            if let Some(name) = exported.as_ref().filter(|n| *n != "*") {
                reexports.insert((own.clone(), name.clone()), p.clone());
            }
        }
        named.push((m, paths));
    }
    let mut g = BTreeMap::new();
    for (m, paths) in named {
        let mut deps = BTreeSet::new();
        for (p, exported) in paths {
            // A `pub use` forwards a name, it is not a use of it: whoever
            // names the re-export depends on the module defining it.
            if exported.is_some() {
                continue;
            }
            if let Some(target) = resolve(&p, &modules, &reexports) {
                if target != m && !target.is_empty() {
                    deps.insert(target);
                }
            }
        }
        g.insert(m, deps);
    }
    g
}

/// Each strongly connected component of more than one module, as one
/// concrete cycle through it (Tarjan, then a path search in the component).
fn cycles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        sccs: Vec<Vec<&'a Module>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Module) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let Some((w, _)) = self.g.get_key_value(w) else {
                    continue;
                };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                self.sccs.push(scc);
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    let mut out = Vec::new();
    for scc in t.sccs.into_iter().filter(|s| s.len() > 1) {
        let members: BTreeSet<&Module> = scc.iter().copied().collect();
        let start = *members.iter().next().unwrap();
        // Shortest way from `start` back to itself inside the component.
        let mut prev: BTreeMap<&Module, &Module> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut back = None;
        while let Some(v) = queue.pop_front() {
            for w in &g[v] {
                if w == start {
                    back = Some(v);
                    break;
                }
                if members.contains(w) && !prev.contains_key(w) {
                    let (w, _) = g.get_key_value(w).unwrap();
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
            if back.is_some() {
                break;
            }
        }
        let mut path = vec![start.clone()];
        let mut v = back.unwrap();
        let mut tail = vec![v.clone()];
        while v != start {
            v = prev[v];
            if v != start {
                tail.push(v.clone());
            }
        }
        tail.reverse();
        path.extend(tail);
        path.push(start.clone());
        out.push(path);
    }
    out
}

fn top(m: &Module) -> &str {
    m.first().map_or("", String::as_str)
}

#[test]
fn the_scanner_reads_use_trees_and_paths() {
    let modules: BTreeSet<Module> = [
        vec!["a"],
        vec!["a", "b"],
        vec!["a", "c"],
        vec!["d"],
        vec!["d", "e"],
    ]
    .into_iter()
    .map(|m| m.into_iter().map(str::to_owned).collect())
    .collect();
    let src = r##"
        //! crate::d::e in a comment is no edge.
        use crate::{d::{self, e::Thing as Other}, a::*};
        use super::c;
        mod b;
        mod tests { use super::*; use super::super::d; }
        fn f<'a>(x: &'a str) -> char {
            let _ = "crate::d::e is a string";
            let _ = r#"crate::d"#;
            b::go(); ::std::mem::drop(0); crate::d::e::run();
            '"'
        }
        #[validate(custom(function = "crate::d::e::check"))]
        struct S;
    "##;
    let here: Module = vec!["a".to_owned()];
    let paths = paths_of(&tokenize(src), &here, &modules);
    let reexports: Reexports = [(
        (vec!["d".to_owned()], "Thing".to_owned()),
        vec!["d".to_owned(), "e".to_owned(), "Thing".to_owned()],
    )]
    .into();
    let found: BTreeSet<String> = paths
        .iter()
        .filter_map(|(p, _)| resolve(p, &modules, &reexports))
        .map(|m| name(&m))
        .collect();
    let expected: BTreeSet<String> = ["d", "d::e", "a", "a::b"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    // `super::c` from `a` is the crate root's `c`: not a module, dropped;
    // `super::*` in the inline `tests` is `a` itself.
    assert_eq!(found, expected);
}

#[test]
fn the_cycle_finder_names_the_files_of_a_cycle() {
    let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
    let g: BTreeMap<Module, BTreeSet<Module>> = [
        (m("a"), [m("b")].into()),
        (m("b"), [m("c")].into()),
        (m("c"), [m("a"), m("d")].into()),
        (m("d"), BTreeSet::new()),
    ]
    .into();
    let found = cycles(&g);
    assert_eq!(found, vec![vec![m("a"), m("b"), m("c"), m("a")]]);
}

/// The edges from a module of `group` to a feature or `http`, less the
/// allowed ones.
fn feature_or_http_imports(group: &[&str]) -> Vec<String> {
    let g = graph();
    assert!(g.len() > 50, "src/ was not read ({} modules)", g.len());
    let mut bad = Vec::new();
    for (from, deps) in &g {
        if !group.contains(&top(from)) {
            continue;
        }
        for to in deps {
            let t = top(to);
            if (FEATURES.contains(&t) || t == "http")
                && !LEAF_ALLOW.contains(&(name(from).as_str(), name(to).as_str()))
            {
                bad.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    bad
}

#[test]
fn leaf_modules_import_no_feature_and_not_http() {
    let bad = feature_or_http_imports(LEAVES);
    assert!(
        bad.is_empty(),
        "leaf modules importing a feature or http:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_floor_imports_no_feature_and_not_http() {
    assert!(FLOOR
        .iter()
        .all(|m| !FEATURES.contains(m) && !LEAVES.contains(m)));
    let bad = feature_or_http_imports(FLOOR);
    assert!(
        bad.is_empty(),
        "configuration importing a feature or http (move the value type into \
         config and re-export it from the feature):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn features_import_neither_startup_nor_main() {
    let g = graph();
    let bad: Vec<String> = g
        .iter()
        .filter(|(from, _)| FEATURES.contains(&top(from)))
        .flat_map(|(from, deps)| {
            deps.iter()
                .filter(|to| ENTRY_POINTS.contains(&top(to)))
                .map(move |to| format!("{} -> {}", name(from), name(to)))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "features importing an entry point:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    let found: Vec<String> = cycles(&g)
        .iter()
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" -> "))
        .collect();
    assert!(
        found.is_empty(),
        "module import cycles (break each by moving the shared item down):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn every_handler_is_named_after_its_operation() {
    let routes = mobile_backend::http::api_routes();
    assert!(routes.table().len() > 40, "the route table was not read");
    let bad: Vec<String> = routes
        .table()
        .iter()
        .filter(|r| r.handler != r.operation_id)
        .map(|r| {
            format!(
                "{} {}: operationId {} is handled by {}",
                r.method, r.path, r.operation_id, r.handler
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "handlers not named after their operation:\n  {}",
        bad.join("\n  ")
    );
}

/// "MFA is on" has one definition, `mfa::db::mfa_enabled`. A statement that
/// needs the answer inline spells its predicate the same way, so searching
/// for that one string finds every use, and no query decides it from
/// another column (issue #12).
#[test]
fn mfa_is_on_is_spelled_one_way() {
    const TABLE: &str = "FROM mfa_totp m WHERE m.user_id = ";
    const ON: &str = "AND m.enabled_at IS NOT NULL";
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses = 0;
    let mut bad = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let at = || format!("{}:{}: {}", f.display(), n + 1, line.trim());
            if line.contains("secret_ciphertext IS") {
                bad.push(at());
            } else if line.contains("enabled_at IS") {
                if line.contains(TABLE) && line.contains(ON) {
                    uses += 1;
                } else {
                    bad.push(at());
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "\"MFA is on\" spelled another way than mfa::db::mfa_enabled ({TABLE}… {ON}):\n  {}",
        bad.join("\n  ")
    );
    // The definition and the three statements that inline it.
    assert!(uses >= 4, "only {uses} uses found: was src/ read?");
}
