//! Writing names and values into SQL text, for the places where they cannot be bind
//! parameters (DDL, table names in queries): identifiers, literals and qualified names.

/// PostgreSQL's reserved key words (SQL Key Words appendix, "reserved" and "reserved
/// (can be function or type)"): as a bare identifier each would be read as syntax.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// An identifier, always quoted (`"` doubled): safe for any name, whatever its case,
/// spelling or symbols.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An identifier quoted only when it has to be (reserved word, capitals, symbols), so
/// generated migrations read like hand-written ones.
pub fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&name);
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

/// A string literal (`'` doubled). Standard-conforming strings are on since PostgreSQL
/// 9.1, so a backslash is an ordinary character.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `schema.name`, both parts always quoted: for SQL text.
pub fn quote_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// `schema.name` as people read it: the name alone in `public`, unquoted, for messages
/// and snapshots (never for SQL text).
pub fn display_name(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_always_quotes_and_doubles_embedded_quotes() {
        assert_eq!(quote_ident("leads"), "\"leads\"");
        assert_eq!(quote_ident("Leads"), "\"Leads\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident(""), "\"\"");
    }

    #[test]
    fn ident_quotes_keywords_mixed_case_and_symbols_only() {
        assert_eq!(ident("leads"), "leads");
        assert_eq!(ident("_tenant_id2"), "_tenant_id2");
        assert_eq!(ident("user"), "\"user\"");
        assert_eq!(ident("order"), "\"order\"");
        assert_eq!(ident("Leads"), "\"Leads\"");
        assert_eq!(ident("a b"), "\"a b\"");
        assert_eq!(ident("2fa"), "\"2fa\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("café"), "\"café\"");
        // Non-reserved key words are valid bare identifiers.
        assert_eq!(ident("name"), "name");
    }

    #[test]
    fn the_keyword_list_is_sorted_lowercase_and_unique() {
        let mut sorted = RESERVED.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, RESERVED);
        assert!(RESERVED.iter().all(|k| *k == k.to_lowercase()));
    }

    #[test]
    fn literals_double_single_quotes_and_keep_backslashes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b"), r"'a\b'");
        assert_eq!(literal(""), "''");
    }

    #[test]
    fn qualified_names() {
        assert_eq!(quote_qualified("public", "leads"), "\"public\".\"leads\"");
        assert_eq!(quote_qualified("My", "t\"x"), "\"My\".\"t\"\"x\"");
        assert_eq!(display_name("public", "leads"), "leads");
        assert_eq!(display_name("audit", "events"), "audit.events");
    }
}
