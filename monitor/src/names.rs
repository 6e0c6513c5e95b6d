//! The one sentence for an unknown node name, with the closest known names:
//! the monitor answers it to refused requests, and the CLI to names it
//! checks itself.

/// "formation F has no node named N: did you mean …?" (or the node list).
pub fn unknown_node(formation: &str, name: &str, known: &[&str]) -> String {
    let close = closest(name, known);
    let hint = if !close.is_empty() {
        format!(": did you mean {}?", close.join(" or "))
    } else if known.is_empty() {
        ": it has no nodes".to_string()
    } else {
        format!(": its nodes are {}", known.join(", "))
    };
    format!("formation {formation} has no node named {name:?}{hint}")
}

/// The known names nearest to `name` (at most 3, all at the smallest edit
/// distance), and only when they are close at all.
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Vec<&'a str> {
    let mut ranked: Vec<(usize, &str)> =
        known.iter().map(|k| (edit_distance(name, k), *k)).collect();
    ranked.sort();
    ranked.dedup();
    let best = ranked.first().map_or(usize::MAX, |(d, _)| *d);
    ranked
        .into_iter()
        .filter(|(d, k)| *d == best && *d <= 2.max(k.len() / 3))
        .take(3)
        .map(|(_, k)| k)
        .collect()
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
