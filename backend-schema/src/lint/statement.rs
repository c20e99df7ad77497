//! What kind of statement a migration statement is, read from PostgreSQL's own tokens
//! (squawk's port of `scan.l`): enough of the grammar to name the table it works on and
//! the actions the lint rules care about. Strings, comments and quoted names never
//! look like key words here.

use squawk_lexer::TokenKind;

/// One token that is not whitespace or a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Upper-cased for key words and plain names; quoted names keep their case.
    pub upper: String,
    /// The name it stands for (plain names folded to lower case, quotes removed), or
    /// the text of a string literal without its quotes.
    pub value: String,
    pub kind: WordKind,
    /// Parenthesis depth at this token.
    pub depth: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordKind {
    Ident,
    Quoted,
    Str,
    Other,
}

/// The words of `sql`.
pub fn words(sql: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut depth = 0usize;
    for token in squawk_lexer::tokenize(sql) {
        let text = &sql[offset..offset + token.len as usize];
        offset += token.len as usize;
        let (kind, value) = match token.kind {
            TokenKind::Whitespace | TokenKind::LineComment | TokenKind::BlockComment { .. } => {
                continue
            }
            TokenKind::Ident => (WordKind::Ident, text.to_lowercase()),
            TokenKind::QuotedIdent { .. } => (
                WordKind::Quoted,
                text.trim_matches('"').replace("\"\"", "\""),
            ),
            TokenKind::Literal { .. } if text.starts_with('\'') => {
                (WordKind::Str, text.trim_matches('\'').replace("''", "'"))
            }
            _ => (WordKind::Other, text.to_string()),
        };
        if token.kind == TokenKind::CloseParen {
            depth = depth.saturating_sub(1);
        }
        out.push(Word {
            upper: match kind {
                WordKind::Ident => text.to_ascii_uppercase(),
                _ => text.to_string(),
            },
            value,
            kind,
            depth,
        });
        if token.kind == TokenKind::OpenParen {
            depth += 1;
        }
    }
    out
}

/// A statement as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    CreateTable {
        table: String,
    },
    CreateIndex {
        table: String,
        concurrently: bool,
        if_not_exists: bool,
    },
    DropIndex {
        concurrently: bool,
        if_exists: bool,
    },
    AlterTable {
        table: String,
        actions: Vec<Action>,
    },
    RenameTable {
        table: String,
        to: String,
    },
    DropTable {
        tables: Vec<String>,
    },
    /// `ALTER TYPE t ADD VALUE [IF NOT EXISTS] 'v'`.
    AddEnumValue {
        value: String,
        if_not_exists: bool,
    },
    /// Statements PostgreSQL refuses inside a transaction block, or that only set the
    /// session (`SET`): what a non-transactional migration may hold.
    OutsideTransaction,
    Cluster,
    VacuumFull,
    Other,
}

/// One action of `ALTER TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A FOREIGN KEY or CHECK added without NOT VALID: validated under the lock.
    ValidatedConstraint {
        what: &'static str,
    },
    /// UNIQUE or PRIMARY KEY added without `USING INDEX`: its index built under the lock.
    UniqueInPlace {
        what: &'static str,
    },
    /// An EXCLUDE constraint added: its index is built under the lock, and PostgreSQL
    /// has no `USING INDEX` or concurrent form for it.
    ExclusionInPlace,
    SetNotNull {
        column: String,
    },
    AlterType {
        column: String,
    },
    AddColumnWithDefault {
        column: String,
    },
    SetLogged,
    RenameColumn {
        from: String,
        to: String,
    },
    DropColumn {
        column: String,
    },
    Other,
}

fn is(w: Option<&Word>, upper: &str) -> bool {
    w.is_some_and(|w| w.kind == WordKind::Ident && w.upper == upper)
}

/// The (last part of a possibly qualified) name starting at `i`, and the index after it.
fn name_at(words: &[Word], mut i: usize) -> (String, usize) {
    let mut name = String::new();
    while let Some(w) = words.get(i) {
        if !matches!(w.kind, WordKind::Ident | WordKind::Quoted) {
            break;
        }
        name = w.value.clone();
        if words.get(i + 1).is_some_and(|d| d.upper == ".") {
            i += 2;
        } else {
            i += 1;
            break;
        }
    }
    (name, i)
}

/// Skips the optional words at `i` (in order), returning whether all were present.
fn skip(words: &[Word], i: &mut usize, optional: &[&str]) -> bool {
    let present = optional
        .iter()
        .enumerate()
        .all(|(k, o)| is(words.get(*i + k), o));
    if present {
        *i += optional.len();
    }
    present
}

/// Classifies one statement.
pub fn classify(sql: &str) -> Kind {
    let words = words(sql);
    let up = |i: usize| words.get(i).map(|w| w.upper.as_str()).unwrap_or("");
    match (up(0), up(1)) {
        ("CREATE", _) => create(&words),
        ("ALTER", "TABLE") => alter_table(&words),
        ("ALTER", "TYPE") => {
            let (_, mut i) = name_at(&words, 2);
            if skip(&words, &mut i, &["ADD", "VALUE"]) {
                let if_not_exists = skip(&words, &mut i, &["IF", "NOT", "EXISTS"]);
                let value = words.get(i).map(|w| w.value.clone()).unwrap_or_default();
                return Kind::AddEnumValue {
                    value,
                    if_not_exists,
                };
            }
            Kind::Other
        }
        ("DROP", "TABLE") => {
            let mut i = 2;
            skip(&words, &mut i, &["IF", "EXISTS"]);
            let mut tables = Vec::new();
            loop {
                let (name, next) = name_at(&words, i);
                if name.is_empty() {
                    break;
                }
                tables.push(name);
                i = next;
                if up(i) != "," {
                    break;
                }
                i += 1;
            }
            Kind::DropTable { tables }
        }
        ("DROP", "INDEX") => {
            let mut i = 2;
            let concurrently = skip(&words, &mut i, &["CONCURRENTLY"]);
            Kind::DropIndex {
                concurrently,
                if_exists: skip(&words, &mut i, &["IF", "EXISTS"]),
            }
        }
        ("REINDEX", _)
            if words
                .iter()
                .any(|w| w.depth == 0 && w.upper == "CONCURRENTLY") =>
        {
            Kind::OutsideTransaction
        }
        ("VACUUM", _) if words.iter().any(|w| w.upper == "FULL") => Kind::VacuumFull,
        ("CLUSTER", _) => Kind::Cluster,
        ("VACUUM" | "ANALYZE" | "SET" | "RESET", _) => Kind::OutsideTransaction,
        ("ALTER", "SYSTEM") => Kind::OutsideTransaction,
        _ => Kind::Other,
    }
}

fn create(words: &[Word]) -> Kind {
    let mut i = 1;
    skip(words, &mut i, &["UNIQUE"]);
    if skip(words, &mut i, &["INDEX"]) {
        let concurrently = skip(words, &mut i, &["CONCURRENTLY"]);
        let if_not_exists = skip(words, &mut i, &["IF", "NOT", "EXISTS"]);
        let Some(on) = words.iter().position(|w| w.depth == 0 && is(Some(w), "ON")) else {
            return Kind::Other;
        };
        let mut at = on + 1;
        skip(words, &mut at, &["ONLY"]);
        return Kind::CreateIndex {
            table: name_at(words, at).0,
            concurrently,
            if_not_exists,
        };
    }
    let mut i = 1;
    for optional in [
        &["GLOBAL"][..],
        &["LOCAL"],
        &["TEMPORARY"],
        &["TEMP"],
        &["UNLOGGED"],
    ] {
        skip(words, &mut i, optional);
    }
    if skip(words, &mut i, &["TABLE"]) {
        skip(words, &mut i, &["IF", "NOT", "EXISTS"]);
        return Kind::CreateTable {
            table: name_at(words, i).0,
        };
    }
    Kind::Other
}

fn alter_table(words: &[Word]) -> Kind {
    let mut i = 2;
    skip(words, &mut i, &["IF", "EXISTS"]);
    skip(words, &mut i, &["ONLY"]);
    let (table, mut i) = name_at(words, i);
    if words.get(i).is_some_and(|w| w.upper == "*") {
        i += 1;
    }
    if is(words.get(i), "RENAME") && is(words.get(i + 1), "TO") {
        return Kind::RenameTable {
            table,
            to: name_at(words, i + 2).0,
        };
    }
    // Actions are separated by commas at depth 0.
    let mut actions = Vec::new();
    let mut start = i;
    for end in (i..=words.len())
        .filter(|&k| k == words.len() || (words[k].depth == 0 && words[k].upper == ","))
    {
        if end > start {
            actions.push(action(&words[start..end]));
        }
        start = end + 1;
    }
    Kind::AlterTable { table, actions }
}

fn action(w: &[Word]) -> Action {
    let has = |word: &str| {
        w.iter()
            .any(|x| x.kind == WordKind::Ident && x.upper == word)
    };
    let at = |i: usize, word: &str| is(w.get(i), word);
    if at(0, "ADD") {
        let not_valid = w
            .windows(2)
            .any(|p| is(Some(&p[0]), "NOT") && is(Some(&p[1]), "VALID"));
        let depth0 = |word: &str| w.iter().any(|x| x.depth == 0 && is(Some(x), word));
        let is_constraint = at(1, "CONSTRAINT")
            || ["FOREIGN", "CHECK", "UNIQUE", "PRIMARY", "EXCLUDE"]
                .iter()
                .any(|k| at(1, k));
        if is_constraint {
            if depth0("FOREIGN") && !not_valid {
                return Action::ValidatedConstraint {
                    what: "FOREIGN KEY",
                };
            }
            if depth0("CHECK") && !not_valid {
                return Action::ValidatedConstraint { what: "CHECK" };
            }
            let using_index = w
                .windows(2)
                .any(|p| is(Some(&p[0]), "USING") && is(Some(&p[1]), "INDEX"));
            if depth0("UNIQUE") && !using_index {
                return Action::UniqueInPlace { what: "UNIQUE" };
            }
            if depth0("PRIMARY") && !using_index {
                return Action::UniqueInPlace {
                    what: "PRIMARY KEY",
                };
            }
            if depth0("EXCLUDE") {
                return Action::ExclusionInPlace;
            }
            return Action::Other;
        }
        let mut i = 1;
        skip(w, &mut i, &["COLUMN"]);
        skip(w, &mut i, &["IF", "NOT", "EXISTS"]);
        let column = name_at(w, i).0;
        if w.iter().any(|x| x.depth == 0 && is(Some(x), "DEFAULT")) {
            return Action::AddColumnWithDefault { column };
        }
        // An inline REFERENCES or CHECK is validated at once, like ADD CONSTRAINT.
        if w.iter().any(|x| x.depth == 0 && is(Some(x), "REFERENCES")) {
            return Action::ValidatedConstraint {
                what: "FOREIGN KEY",
            };
        }
        return Action::Other;
    }
    if at(0, "ALTER") {
        let mut i = 1;
        skip(w, &mut i, &["COLUMN"]);
        let (column, i) = name_at(w, i);
        if (at(i, "SET") && at(i + 1, "NOT") && at(i + 2, "NULL")) && w.len() == i + 3 {
            return Action::SetNotNull { column };
        }
        if at(i, "TYPE") || (at(i, "SET") && at(i + 1, "DATA") && at(i + 2, "TYPE")) {
            return Action::AlterType { column };
        }
        return Action::Other;
    }
    if at(0, "SET") && (at(1, "LOGGED") || at(1, "UNLOGGED")) {
        return Action::SetLogged;
    }
    if at(0, "RENAME") && !at(1, "CONSTRAINT") {
        let mut i = 1;
        skip(w, &mut i, &["COLUMN"]);
        let (from, i) = name_at(w, i);
        if at(i, "TO") {
            return Action::RenameColumn {
                from,
                to: name_at(w, i + 1).0,
            };
        }
    }
    if at(0, "DROP") && !at(1, "CONSTRAINT") && !has("DEFAULT") && !at(1, "NOT") {
        let mut i = 1;
        let column_word = skip(w, &mut i, &["COLUMN"]);
        skip(w, &mut i, &["IF", "EXISTS"]);
        // `DROP name` is a column too; DROP EXPRESSION/IDENTITY belong to ALTER COLUMN.
        if column_word || w.len() <= 3 {
            return Action::DropColumn {
                column: name_at(w, i).0,
            };
        }
    }
    Action::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_kinds() {
        assert_eq!(
            classify("CREATE UNIQUE INDEX IF NOT EXISTS ix ON public.\"Leads\" (email)"),
            Kind::CreateIndex {
                table: "Leads".into(),
                concurrently: false,
                if_not_exists: true
            }
        );
        assert!(matches!(
            classify("-- c\ncreate index concurrently ix on leads using btree (lower(email))"),
            Kind::CreateIndex { concurrently: true, ref table, .. } if table == "leads"
        ));
    }

    #[test]
    fn alter_table_actions() {
        let Kind::AlterTable { table, actions } = classify(
            "ALTER TABLE ONLY leads ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES t (id), \
             ADD CONSTRAINT ck CHECK (score > 0) NOT VALID, ALTER COLUMN score TYPE bigint, \
             ALTER email SET NOT NULL, ADD COLUMN n int DEFAULT random(), DROP COLUMN x, \
             ADD CONSTRAINT u UNIQUE (email), ADD PRIMARY KEY USING INDEX ix, \
             ALTER COLUMN y SET DEFAULT 0, DROP CONSTRAINT z",
        ) else {
            panic!()
        };
        assert_eq!(table, "leads");
        assert_eq!(
            actions,
            [
                Action::ValidatedConstraint {
                    what: "FOREIGN KEY"
                },
                Action::Other,
                Action::AlterType {
                    column: "score".into()
                },
                Action::SetNotNull {
                    column: "email".into()
                },
                Action::AddColumnWithDefault { column: "n".into() },
                Action::DropColumn { column: "x".into() },
                Action::UniqueInPlace { what: "UNIQUE" },
                Action::Other,
                Action::Other,
                Action::Other,
            ]
        );
        assert_eq!(
            classify("ALTER TABLE leads RENAME COLUMN a TO b"),
            Kind::AlterTable {
                table: "leads".into(),
                actions: vec![Action::RenameColumn {
                    from: "a".into(),
                    to: "b".into()
                }]
            }
        );
        assert_eq!(
            classify("ALTER TABLE leads RENAME TO prospects"),
            Kind::RenameTable {
                table: "leads".into(),
                to: "prospects".into()
            }
        );
    }

    #[test]
    fn strings_and_comments_are_not_key_words() {
        assert_eq!(
            classify("ALTER TABLE t ADD COLUMN note text -- DEFAULT 'x'\n"),
            Kind::AlterTable {
                table: "t".into(),
                actions: vec![Action::Other]
            }
        );
        assert_eq!(
            classify("ALTER TYPE s ADD VALUE IF NOT EXISTS 'it''s'"),
            Kind::AddEnumValue {
                value: "it's".into(),
                if_not_exists: true
            }
        );
    }
}
