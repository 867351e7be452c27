//! How a user's reference to a node, service or network picks one object,
//! in Docker's order: a full ID, then an exact name, then an ID prefix.
//! Names win over prefixes because IDs are random: a node called `h1` must
//! not become ambiguous the day another node's ID happens to start with `h1`.

/// What a reference matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Found(&'a T),
    Missing,
    /// More than one object has this name, or (with no name matching) this
    /// ID prefix.
    Ambiguous(usize),
}

/// Finds the one item `reference` names, given each item's ID and name.
pub fn lookup<'a, T>(
    items: impl Iterator<Item = &'a T> + Clone,
    reference: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Lookup<'a, T> {
    if let Some(item) = items.clone().find(|item| id(item) == reference) {
        return Lookup::Found(item);
    }
    let by_name: Vec<&T> = items
        .clone()
        .filter(|item| name(item) == reference)
        .collect();
    let matches = if by_name.is_empty() {
        items
            .filter(|item| id(item).starts_with(reference))
            .collect()
    } else {
        by_name
    };
    match matches.as_slice() {
        [] => Lookup::Missing,
        [one] => Lookup::Found(one),
        many => Lookup::Ambiguous(many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Item {
        id: &'static str,
        name: &'static str,
    }

    fn find<'a>(items: &'a [Item], reference: &str) -> Lookup<'a, Item> {
        lookup(items.iter(), reference, |i| i.id, |i| i.name)
    }

    const ITEMS: [Item; 3] = [
        Item {
            id: "h1x9",
            name: "h2",
        },
        Item {
            id: "abc1",
            name: "h1",
        },
        Item {
            id: "abc2",
            name: "web",
        },
    ];

    #[test]
    fn a_name_wins_over_an_id_prefix() {
        assert!(matches!(find(&ITEMS, "h1"), Lookup::Found(i) if i.id == "abc1"));
    }

    #[test]
    fn a_full_id_wins_over_a_name() {
        let items = [
            Item {
                id: "web",
                name: "x",
            },
            Item {
                id: "y",
                name: "web",
            },
        ];
        assert!(matches!(find(&items, "web"), Lookup::Found(i) if i.id == "web"));
    }

    #[test]
    fn a_unique_prefix_finds_and_a_shared_one_is_ambiguous() {
        assert!(matches!(find(&ITEMS, "abc2"), Lookup::Found(i) if i.name == "web"));
        assert!(matches!(find(&ITEMS, "h1x"), Lookup::Found(i) if i.name == "h2"));
        assert_eq!(find(&ITEMS, "abc"), Lookup::Ambiguous(2));
        assert_eq!(find(&ITEMS, "zz"), Lookup::Missing);
    }

    #[test]
    fn two_objects_with_one_name_are_ambiguous() {
        let items = [Item { id: "a", name: "n" }, Item { id: "b", name: "n" }];
        assert_eq!(find(&items, "n"), Lookup::Ambiguous(2));
    }
}
