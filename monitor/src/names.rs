//! The one sentence for an unknown node name, with the closest known names:
//! the monitor answers it to refused requests, and the CLI to names it
//! checks itself; and how a refusal shows a value from the request.

/// Characters of a value a refusal shows; the rest is counted, not shown.
pub const SHOWN_CHARS: usize = 64;

/// Known names listed when none is close to the one asked for.
pub const LISTED_NAMES: usize = 10;

/// Characters of those names listed at most (after the first).
pub const LISTED_CHARS: usize = 300;

/// `value` as a refusal shows it: quoted with control characters escaped,
/// and only its first [`SHOWN_CHARS`] characters, so that a huge or
/// garbled request cannot make the answer huge (a gRPC message travels in
/// an HTTP/2 header, whose size clients bound).
pub fn quote(value: &str) -> String {
    let mut shown = String::new();
    let mut shown_chars = 0;
    let mut taken = 0;
    for c in value.chars() {
        // As `{:?}` writes it inside double quotes.
        let escaped: String = if c == '\'' {
            c.to_string()
        } else {
            c.escape_debug().collect()
        };
        let width = escaped.chars().count();
        if shown_chars + width > SHOWN_CHARS {
            break;
        }
        shown.push_str(&escaped);
        shown_chars += width;
        taken += 1;
    }
    let count = value.chars().count();
    if taken == count {
        format!("\"{shown}\"")
    } else {
        format!("\"{shown}\"… ({count} characters)")
    }
}

/// "formation F has no node named N: did you mean …?" (or the node list).
pub fn unknown_node(formation: &str, name: &str, known: &[&str]) -> String {
    let close = closest(name, known);
    let hint = if !close.is_empty() {
        format!(": did you mean {}?", close.join(" or "))
    } else if known.is_empty() {
        ": it has no nodes".to_string()
    } else {
        // At most LISTED_NAMES names, and no more than LISTED_CHARS of
        // them (names are up to 63 characters): the answer stays a sentence.
        let mut listed: Vec<&str> = Vec::new();
        let mut chars = 0;
        for k in known.iter().take(LISTED_NAMES) {
            if !listed.is_empty() && chars + k.len() > LISTED_CHARS {
                break;
            }
            chars += k.len() + 2;
            listed.push(k);
        }
        if listed.len() == known.len() {
            format!(": its nodes are {}", listed.join(", "))
        } else {
            format!(
                ": its nodes include {} and {} more (see show-state)",
                listed.join(", "),
                known.len() - listed.len()
            )
        }
    };
    format!(
        "formation {formation} has no node named {}{hint}",
        quote(name)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_in_refusals() {
        assert_eq!(quote("node1"), "\"node1\"");
        assert_eq!(quote("a\0b\n"), "\"a\\0b\\n\"");
        let long = "x".repeat(100_000);
        let shown = quote(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("… (100000 characters)"), "{shown}");
        // Cut on a character, never inside one or inside its escape.
        let wide = "\u{1F418}".repeat(SHOWN_CHARS + 1);
        assert!(quote(&wide).contains(&format!("({} characters)", SHOWN_CHARS + 1)));
        let unprintable = "\u{e0001}".repeat(1000);
        let shown = quote(&unprintable);
        assert!(shown.starts_with("\"\\u{e0001}\\u{e0001}"), "{shown}");
        assert!(shown.contains("}\"… (1000 characters)"), "{shown}");
        assert!(shown.chars().count() < SHOWN_CHARS + 30, "{shown}");
        assert_eq!(quote("it's \"x\""), format!("{:?}", "it's \"x\""));
    }

    #[test]
    fn unknown_names_list_a_bounded_number_of_nodes() {
        assert_eq!(
            unknown_node("default", "node9", &[]),
            "formation default has no node named \"node9\": it has no nodes"
        );
        assert_eq!(
            unknown_node("default", "nodf1", &["node1", "zzz"]),
            "formation default has no node named \"nodf1\": did you mean node1?"
        );
        let many: Vec<String> = (0..50).map(|i| format!("member-{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        // Long names: fewer are listed, the sentence stays short.
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "n".repeat(62))).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let message = unknown_node("default", "q", &long);
        assert!(message.len() < 450, "{message}");
        assert!(
            message.ends_with("and 6 more (see show-state)"),
            "{message}"
        );
        let message = unknown_node("default", "q", &many);
        assert!(
            message.contains("member-09 and 40 more (see show-state)"),
            "{message}"
        );
        assert!(!message.contains("member-10"), "{message}");
        let message = unknown_node("default", &"q".repeat(5000), &many);
        assert!(message.len() < 400, "{message}");
    }
}
