//! Dependency resolution: which discovered plugins may load, and in what order.
//!
//! Pure code. Owns the rules: duplicate ids (a plugin's own and those of the connector plugins
//! it provides, naming both sources), the host-API range, missing or incompatible
//! dependencies and cycles each refuse a plugin with a reason, and refusal spreads to every
//! plugin that depends on a refused one. The rest are ordered topologically, ties broken by
//! discovery order. Does not load or start anything.

use std::collections::{BTreeSet, HashMap};

use super::{PluginManifest, HOST_API_VERSION};

/// The outcome: the start order and the refused plugins (indices into the input).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub order: Vec<usize>,
    pub refused: Vec<(usize, String)>,
}

/// One plugin's claim on ids: its own and its connector plugins', and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub ids: Vec<String>,
    /// `the native built-in 'openai'`, or the file (`plugins/core/x/index.ts`).
    pub origin: String,
    pub native: bool,
}

/// Claims on an id an earlier claim holds are refused (natives come first, then files in
/// discovery order); the reason names both sources and the way out.
pub fn clashes(claims: &[Claim]) -> Vec<(usize, String)> {
    let mut owners: HashMap<&str, usize> = HashMap::new();
    let mut refused = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        let clash = claim
            .ids
            .iter()
            .find_map(|id| owners.get(id.as_str()).map(|&owner| (id, owner)));
        match clash {
            Some((id, owner)) => {
                let held = &claims[owner];
                let way_out = if held.native {
                    format!(
                        "drop '{}' from plugins.native to let this one have it",
                        held.ids[0]
                    )
                } else {
                    "plugin ids must be unique".to_string()
                };
                refused.push((
                    i,
                    format!(
                        "{} declares the id '{id}', which {} already has; {way_out}",
                        claim.origin, held.origin
                    ),
                ));
            }
            None => {
                for id in &claim.ids {
                    owners.entry(id).or_insert(i);
                }
            }
        }
    }
    refused
}

pub fn resolve(manifests: &[PluginManifest]) -> Resolution {
    let mut refused: HashMap<usize, String> = HashMap::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (i, m) in manifests.iter().enumerate() {
        if by_id.contains_key(m.id.as_str()) {
            refused.insert(
                i,
                format!("duplicate plugin id '{}': an earlier plugin has it", m.id),
            );
        } else {
            by_id.insert(&m.id, i);
        }
        if !m.host_api.matches(&HOST_API_VERSION) {
            refused.entry(i).or_insert(format!(
                "needs host API {}, this host provides {HOST_API_VERSION}",
                m.host_api
            ));
        }
    }

    // Missing and incompatible dependencies, spreading until nothing changes.
    loop {
        let mut changed = false;
        for (i, m) in manifests.iter().enumerate() {
            if refused.contains_key(&i) {
                continue;
            }
            for dep in &m.dependencies {
                let reason = match by_id.get(dep.id.as_str()) {
                    None => Some(format!("depends on '{}', which is not loaded", dep.id)),
                    Some(&j) if refused.contains_key(&j) => {
                        Some(format!("depends on '{}', which was refused", dep.id))
                    }
                    Some(&j) if !dep.version.matches(&manifests[j].version) => Some(format!(
                        "depends on '{}' {}, but version {} is loaded",
                        dep.id, dep.version, manifests[j].version
                    )),
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    refused.insert(i, reason);
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }

    // Kahn's algorithm; the ready set is ordered by discovery index.
    let candidates: Vec<usize> = (0..manifests.len())
        .filter(|i| !refused.contains_key(i))
        .collect();
    let mut pending: HashMap<usize, usize> = HashMap::new();
    let mut dependants: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in &candidates {
        let deps: BTreeSet<usize> = manifests[i]
            .dependencies
            .iter()
            .filter_map(|d| by_id.get(d.id.as_str()).copied())
            .collect();
        pending.insert(i, deps.len());
        for j in deps {
            dependants.entry(j).or_default().push(i);
        }
    }
    let mut ready: BTreeSet<usize> = candidates
        .iter()
        .copied()
        .filter(|i| pending[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(candidates.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in dependants.get(&i).into_iter().flatten() {
            let n = pending.get_mut(&d).expect("candidate");
            *n -= 1;
            if *n == 0 {
                ready.insert(d);
            }
        }
    }

    // Whatever is left is on a cycle or waits for one.
    let placed: BTreeSet<usize> = order.iter().copied().collect();
    let left: Vec<usize> = candidates
        .into_iter()
        .filter(|i| !placed.contains(i))
        .collect();
    for &i in &left {
        refused.insert(i, cycle_reason(manifests, &by_id, &left, i));
    }

    let mut refused: Vec<(usize, String)> = refused.into_iter().collect();
    refused.sort();
    Resolution { order, refused }
}

/// Follows unresolved dependencies from `start` until a plugin repeats, and names the cycle.
fn cycle_reason(
    manifests: &[PluginManifest],
    by_id: &HashMap<&str, usize>,
    left: &[usize],
    start: usize,
) -> String {
    let mut path = vec![start];
    let mut current = start;
    loop {
        let next = manifests[current]
            .dependencies
            .iter()
            .filter_map(|d| by_id.get(d.id.as_str()).copied())
            .find(|j| left.contains(j));
        let Some(next) = next else {
            return "its dependencies form a cycle".into();
        };
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let cycle: Vec<&str> = path[pos..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|&k| manifests[k].id.as_str())
                .collect();
            return if pos == 0 {
                format!("dependency cycle: {}", cycle.join(" -> "))
            } else {
                format!(
                    "depends on '{}', which is in a dependency cycle: {}",
                    manifests[path[1]].id,
                    cycle.join(" -> ")
                )
            };
        }
        path.push(next);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use semver::Version;

    fn m(id: &str) -> PluginManifest {
        PluginManifest::new(id, Version::new(1, 2, 0))
    }

    fn ids(ms: &[PluginManifest], r: &Resolution) -> Vec<String> {
        r.order.iter().map(|&i| ms[i].id.clone()).collect()
    }

    #[test]
    fn dependencies_start_first_and_ties_keep_discovery_order() {
        let ms = vec![m("c").depends_on("a", "^1"), m("b"), m("a"), m("d")];
        let r = resolve(&ms);
        assert_eq!(ids(&ms, &r), ["b", "a", "c", "d"]);
        assert!(r.refused.is_empty());
    }

    #[test]
    fn missing_and_incompatible_dependencies_refuse_the_plugin_and_its_dependants() {
        let ms = vec![
            m("a"),
            m("b").depends_on("a", "^2"),
            m("c").depends_on("b", "*"),
            m("d").depends_on("ghost", "*"),
            m("e"),
        ];
        let r = resolve(&ms);
        assert_eq!(ids(&ms, &r), ["a", "e"]);
        assert_eq!(
            r.refused,
            vec![
                (1, "depends on 'a' ^2, but version 1.2.0 is loaded".into()),
                (2, "depends on 'b', which was refused".into()),
                (3, "depends on 'ghost', which is not loaded".into()),
            ]
        );
    }

    #[test]
    fn cycles_are_refused_with_their_path() {
        let ms = vec![
            m("a").depends_on("b", "*"),
            m("b").depends_on("a", "*"),
            m("c").depends_on("a", "*"),
            m("d"),
        ];
        let r = resolve(&ms);
        assert_eq!(ids(&ms, &r), ["d"]);
        assert_eq!(r.refused[0], (0, "dependency cycle: a -> b -> a".into()));
        assert_eq!(r.refused[1], (1, "dependency cycle: b -> a -> b".into()));
        assert!(
            r.refused[2]
                .1
                .starts_with("depends on 'a', which is in a dependency cycle"),
            "{}",
            r.refused[2].1
        );
    }

    fn claim(ids: &[&str], origin: &str, native: bool) -> Claim {
        Claim {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            origin: origin.into(),
            native,
        }
    }

    #[test]
    fn clashing_ids_are_refused_naming_both_sources() {
        let claims = [
            claim(&["openai"], "the native built-in 'openai'", true),
            claim(&["multi"], "plugins/core/a/index.ts", false),
            claim(&["openai"], "plugins/core/krawall-openai/index.ts", false),
            claim(
                &["two", "multi-b", "multi"],
                "plugins/core/b/index.ts",
                false,
            ),
            claim(&["fresh", "other"], "plugins/core/c/index.ts", false),
            claim(&["other"], "plugins/core/d/index.ts", false),
        ];
        let r = clashes(&claims);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0].0, 2);
        assert_eq!(
            r[0].1,
            "plugins/core/krawall-openai/index.ts declares the id 'openai', which the native \
             built-in 'openai' already has; drop 'openai' from plugins.native to let this one have it"
        );
        assert_eq!(r[1].0, 3);
        assert!(
            r[1].1.contains(
                "'multi', which plugins/core/a/index.ts already has; plugin ids must be unique"
            ),
            "{}",
            r[1].1
        );
        // A refused claim holds nothing: only the connector id of c clashes for d.
        assert_eq!(r[2].0, 5);
        assert!(r[2].1.contains("plugins/core/c/index.ts"), "{}", r[2].1);
    }

    #[test]
    fn duplicates_and_host_api_mismatches_are_refused() {
        let mut newer = m("x");
        newer.host_api = semver::VersionReq::parse("^2").unwrap();
        let ms = vec![m("a"), m("a"), newer];
        let r = resolve(&ms);
        assert_eq!(ids(&ms, &r), ["a"]);
        assert!(r.refused[0].1.contains("duplicate plugin id 'a'"));
        assert_eq!(
            r.refused[1].1,
            "needs host API ^2, this host provides 1.0.0"
        );
    }
}
