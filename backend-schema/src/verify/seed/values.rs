//! A value for one column of one seeded row, as text PostgreSQL casts to the column's
//! type: distinct per row where the type allows (so UNIQUE constraints hold), the
//! same tenant's identifiers where a column names a tenant.

use sha2::{Digest, Sha256};

use super::catalog::SeedColumn;

/// A deterministic UUID for row `index` of `tenant` in `table`.
pub fn row_uuid(table: &str, tenant: usize, index: usize) -> String {
    let digest = Sha256::digest(format!("{table}/{tenant}/{index}").as_bytes());
    let hex = crate::text::hex(&digest[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The id of tenant `tenant`.
pub fn tenant_uuid(tenant: usize) -> String {
    row_uuid("tenants", tenant, 0)
}

/// What to put in a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Null,
    /// Leave the column out: its default (or the server) fills it.
    Omit,
}

/// The value of `column` in row `index` of `tenant`, or why there is none.
pub fn value_for(
    table: &str,
    column: &SeedColumn,
    tenant: usize,
    index: usize,
) -> Result<Value, String> {
    if column.filled_by_server {
        return Ok(Value::Omit);
    }
    let textual = matches!(
        column.value_type.as_str(),
        "uuid" | "text" | "character varying"
    ) || column.value_type.starts_with("character varying(");
    if column.name == "tenant_id" && textual && column.element_type.is_none() {
        return Ok(Value::Text(tenant_uuid(tenant)));
    }
    // A nullable `*_id` without a foreign key is a reference the schema may declare
    // later (ADD CONSTRAINT ... FOREIGN KEY): a made-up id would break that migration,
    // which real data (pointing at real rows, or NULL) would not.
    if !column.not_null && column.value_type == "uuid" && column.name.ends_with("_id") {
        return Ok(Value::Null);
    }
    let generated = match &column.element_type {
        Some(element) => scalar(table, column, element, tenant, index).map(|v| array_of(&v)),
        None => scalar(table, column, &column.value_type, tenant, index),
    };
    match generated {
        Some(value) => Ok(Value::Text(value)),
        None if column.has_default => Ok(Value::Omit),
        None if !column.not_null => Ok(Value::Null),
        None => Err(format!(
            "column {} has type {}, which the seeder has no values for, and is NOT NULL without a default",
            column.name, column.type_name
        )),
    }
}

/// `{"value"}`: a one-element array literal.
fn array_of(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{{\"{escaped}\"}}")
}

fn scalar(
    table: &str,
    column: &SeedColumn,
    ty: &str,
    tenant: usize,
    index: usize,
) -> Option<String> {
    // One number per row, across tenants, so single-column UNIQUE constraints hold.
    let n = tenant * 10 + index + 1;
    if !column.enum_labels.is_empty() {
        return Some(column.enum_labels[n % column.enum_labels.len()].clone());
    }
    let text = |max: Option<usize>| {
        let value = if column.name.contains("email") {
            format!("{tenant}{index}-{table}@example.com")
        } else {
            format!(
                "{}-{}-{tenant}-{index}",
                column.name,
                &table[..table.len().min(6)]
            )
        };
        match max {
            // Keep the end: it is what makes the value distinct.
            Some(max) => {
                let chars: Vec<char> = value.chars().collect();
                chars[chars.len().saturating_sub(max)..].iter().collect()
            }
            None => value,
        }
    };
    let length = |prefix: &str| {
        ty.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse::<usize>().ok())
    };
    Some(if ty == "uuid" {
        if column.name == "id" {
            row_uuid(table, tenant, index)
        } else {
            row_uuid(&format!("{table}.{}", column.name), tenant, index)
        }
    } else if let Some(max) = length("character varying(").or_else(|| length("character(")) {
        text(Some(max))
    } else if matches!(ty, "text" | "character varying" | "citext" | "name") {
        text(None)
    } else if ty == "character" || ty == "\"char\"" {
        char::from(b'a' + (n % 26) as u8).to_string()
    } else if matches!(ty, "integer" | "bigint" | "smallint") {
        n.to_string()
    } else if matches!(ty, "double precision" | "real") || ty.starts_with("numeric") {
        format!("0.{n:02}")
    } else if ty == "money" {
        format!("{n}.00")
    } else if ty == "boolean" {
        index.is_multiple_of(2).to_string()
    } else if ty == "json" || ty == "jsonb" {
        format!("{{\"seed\": \"{tenant}-{index}\"}}")
    } else if ty.starts_with("timestamp") {
        format!("2025-0{}-1{} 10:00:00+00", tenant + 1, index)
    } else if ty == "date" {
        format!("2025-0{}-1{}", tenant + 1, index)
    } else if ty.starts_with("time") {
        format!("10:{n:02}:00")
    } else if ty.starts_with("interval") {
        format!("{n} hours")
    } else if ty == "inet" {
        format!("10.0.{tenant}.{}", index + 1)
    } else if ty == "cidr" {
        format!("10.{tenant}.{index}.0/24")
    } else if ty == "macaddr" {
        format!("08:00:2b:01:{tenant:02}:{index:02}")
    } else if ty == "bytea" {
        format!("\\x{n:04x}")
    } else if ty == "tsvector" {
        format!("seed{n}")
    } else if ty.starts_with("bit") {
        "1".into()
    } else if ty == "xml" {
        format!("<seed>{n}</seed>")
    } else if ty == "int4range" || ty == "int8range" {
        format!("[{n},{})", n + 1)
    } else if matches!(ty, "tstzrange" | "tsrange" | "daterange") {
        format!("[2025-01-{n:02},2025-02-{n:02})")
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, ty: &str) -> SeedColumn {
        SeedColumn {
            name: name.into(),
            type_name: ty.into(),
            value_type: ty.into(),
            element_type: None,
            enum_labels: Vec::new(),
            not_null: true,
            has_default: false,
            filled_by_server: false,
        }
    }

    #[test]
    fn uuids_are_valid_and_stable() {
        let id = row_uuid("leads", 1, 0);
        assert_eq!(id.len(), 36);
        assert_eq!(id, row_uuid("leads", 1, 0));
        assert_ne!(id, row_uuid("leads", 0, 1));
    }

    #[test]
    fn values_are_distinct_per_row_and_fit_their_length() {
        let name = column("name", "character varying(4)");
        let a = value_for("t", &name, 0, 0).unwrap();
        let b = value_for("t", &name, 0, 1).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, Value::Text("-0-0".into()));
        let tags = SeedColumn {
            element_type: Some("text".into()),
            ..column("tags", "text[]")
        };
        assert_eq!(
            value_for("t", &tags, 1, 0).unwrap(),
            Value::Text("{\"tags-t-1-0\"}".into())
        );
    }

    #[test]
    fn unknown_types_fall_back_to_the_default_or_null_else_say_why() {
        let mut point = column("at", "point");
        let err = value_for("t", &point, 0, 0).unwrap_err();
        assert!(err.contains("column at has type point"), "{err}");
        point.has_default = true;
        assert_eq!(value_for("t", &point, 0, 0).unwrap(), Value::Omit);
        point.has_default = false;
        point.not_null = false;
        assert_eq!(value_for("t", &point, 0, 0).unwrap(), Value::Null);
    }
}
