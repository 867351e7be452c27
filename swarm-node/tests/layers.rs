//! The layers of `swarm-node/src` (docs/architecture.md): a module uses only
//! modules of lower layers, read from the `crate::` paths in its files.
//! Adding an import that runs back up, or two modules that use each other,
//! fails here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Each top-level module with its layer; a module may use only modules of
/// a lower layer.
const LAYERS: &[(&str, u32)] = &[
    ("clock", 0),
    ("log_time", 0),
    ("lock", 0),
    ("metrics", 0),
    ("identity", 0),
    ("dataplane", 0),
    ("api", 1),
    ("ca", 2),
    ("control", 2),
    ("compose", 2),
    ("gossip", 2),
    ("dns", 3),
    ("image", 3),
    ("stack", 3),
    ("runtime", 4),
    ("manager", 5),
    ("agent", 5),
    ("node", 6),
    ("engine", 6),
    ("daemon", 7),
    ("cli", 8),
];

/// The top-level modules `text` names through `crate::`, whether one at a
/// time (`crate::api::Role`) or grouped (`crate::{api::Role, ca::pki}`).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let ident_at = |mut at: usize| {
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        (text[start..at].to_owned(), at)
    };
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let mut at = at + "crate::".len();
        if bytes.get(at) != Some(&b'{') {
            found.insert(ident_at(at).0);
            continue;
        }
        let mut depth = 0;
        let mut item_starts = true;
        while at < bytes.len() {
            match bytes[at] {
                b'{' => {
                    depth += 1;
                    item_starts = depth == 1;
                }
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                b',' if depth == 1 => item_starts = true,
                b if depth == 1 && item_starts && (b.is_ascii_alphabetic() || b == b'_') => {
                    let (name, end) = ident_at(at);
                    found.insert(name);
                    item_starts = false;
                    at = end;
                    continue;
                }
                _ => {}
            }
            at += 1;
        }
    }
    found
}

fn sources(path: &Path, into: &mut Vec<String>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            sources(&entry.unwrap().path(), into);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        into.push(fs::read_to_string(path).unwrap());
    }
}

/// What each top-level module of `src` uses of the others.
fn module_uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut uses = BTreeMap::new();
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut texts = Vec::new();
        sources(&path, &mut texts);
        let mut used: BTreeSet<String> = texts.iter().flat_map(|t| crate_paths(t)).collect();
        used.remove(&name);
        used.remove("self");
        uses.insert(name, used);
    }
    uses
}

#[test]
fn the_reader_sees_single_and_grouped_paths() {
    let text = "use crate::api::Role;\nuse crate::{\n    ca::{pki::RootCa, tls},\n    lock::Locked as _,\n};\nlet x = crate::clock::now_secs();";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["api", "ca", "clock", "lock"]);
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let uses = module_uses(&src);
    let mut wrong = Vec::new();
    for (module, used) in &uses {
        let Some(&own) = layer.get(module.as_str()) else {
            wrong.push(format!("{module} has no layer in LAYERS"));
            continue;
        };
        for other in used {
            match layer.get(other.as_str()) {
                Some(&theirs) if theirs < own => {}
                Some(&theirs) => wrong.push(format!(
                    "{module} (layer {own}) uses {other} (layer {theirs})"
                )),
                None => wrong.push(format!("{module} uses {other}, which has no layer")),
            }
        }
    }
    for (module, _) in LAYERS {
        if !uses.contains_key(*module) {
            wrong.push(format!("LAYERS names {module}, which src/ does not hold"));
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}
