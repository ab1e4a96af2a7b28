//! `[target]`: where new receipts are written. `kind = "sluice"` (the default) writes Sluice's
//! own `receipts` / `receipt_items`; `kind = "procedure"` calls the customer's procedure
//! (`procedure = "schema.name"`) once per batch with the new receipts as one `jsonb` array.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::valid_identifier;

/// `[target]`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    pub kind: TargetKind,
    /// `schema.name` of the procedure, for `kind = "procedure"` only.
    pub procedure: Option<String>,
}

/// `target.kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Sluice's own tables in `database.schema`.
    #[default]
    Sluice,
    /// `CALL schema.name($1::jsonb)` per batch; Sluice keeps only the ledger and fingerprints.
    Procedure,
}

/// A validated `schema.name`: both parts plain lowercase identifiers, so the name is written
/// into `CALL` as it is, with no quoting to get wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcedureName {
    pub schema: String,
    pub name: String,
}

impl fmt::Display for ProcedureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

impl ProcedureName {
    /// Parses `schema.name`, or says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((schema, name)) = s.split_once('.') else {
            return Err(format!(
                "{s:?} must name its schema too, like \"expenses.ingest_receipts\""
            ));
        };
        for (part, what) in [(schema, "schema"), (name, "procedure name")] {
            if !valid_identifier(part) {
                return Err(format!(
                    "{s:?}: the {what} {part:?} must be 1-63 of [a-z0-9_], not starting with a \
                     digit (one dot between schema and name, no quotes)"
                ));
            }
        }
        Ok(Self {
            schema: schema.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The runtime target, taken out of a validated [`TargetConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    #[default]
    Sluice,
    Procedure(ProcedureName),
}

impl TargetConfig {
    pub(super) fn check(&self, p: &mut Vec<String>) {
        match (self.kind, &self.procedure) {
            (TargetKind::Sluice, Some(_)) => p.push(
                "target.procedure: only for target.kind = \"procedure\" (the kind is \"sluice\", \
                 Sluice's own tables)"
                    .to_owned(),
            ),
            (TargetKind::Procedure, None) => p.push(
                "target.procedure: required for target.kind = \"procedure\", like \
                 \"expenses.ingest_receipts\""
                    .to_owned(),
            ),
            (TargetKind::Procedure, Some(name)) => {
                if let Err(e) = ProcedureName::parse(name) {
                    p.push(format!("target.procedure: {e}"));
                }
            }
            (TargetKind::Sluice, None) => {}
        }
    }

    /// The runtime target. Validation has checked the name; an unparsable one here falls back
    /// to nothing silently only in code that skipped validation, so it is reported instead.
    pub fn target(&self) -> Result<Target, String> {
        match (self.kind, &self.procedure) {
            (TargetKind::Sluice, _) => Ok(Target::Sluice),
            (TargetKind::Procedure, Some(name)) => {
                ProcedureName::parse(name).map(Target::Procedure)
            }
            (TargetKind::Procedure, None) => Err("target.procedure is not set".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    const BASE: &str = r#"
[queue]
url = "http://127.0.0.1:5000/123456789012/q"
[database]
url = "postgres://postgres@127.0.0.1:5432/db"
"#;

    fn problems(target: &str) -> Vec<String> {
        match AgentConfig::from_toml_with_env(&format!("{BASE}[target]\n{target}"), Vec::new()) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn the_default_target_is_sluices_own_tables() {
        let c = AgentConfig::from_toml_with_env(BASE, Vec::new()).expect("valid");
        assert_eq!(c.target, TargetConfig::default());
        assert_eq!(c.target.target(), Ok(Target::Sluice));
    }

    #[test]
    fn a_procedure_target_names_its_schema_and_procedure() {
        let c = AgentConfig::from_toml_with_env(
            &format!(
                "{BASE}[target]\nkind = \"procedure\"\nprocedure = \"expenses.ingest_receipts\""
            ),
            Vec::new(),
        )
        .expect("valid");
        let want = ProcedureName {
            schema: "expenses".into(),
            name: "ingest_receipts".into(),
        };
        assert_eq!(c.target.target(), Ok(Target::Procedure(want.clone())));
        assert_eq!(want.to_string(), "expenses.ingest_receipts");
    }

    #[test]
    fn each_malformed_target_says_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            (
                "kind = \"procedure\"",
                "target.procedure: required for target.kind = \"procedure\", like \"expenses.ingest_receipts\"",
            ),
            (
                "procedure = \"expenses.ingest_receipts\"",
                "target.procedure: only for target.kind = \"procedure\" (the kind is \"sluice\", Sluice's own tables)",
            ),
            (
                "kind = \"procedure\"\nprocedure = \"ingest_receipts\"",
                "target.procedure: \"ingest_receipts\" must name its schema too, like \"expenses.ingest_receipts\"",
            ),
            (
                "kind = \"procedure\"\nprocedure = \"Expenses.ingest\"",
                "target.procedure: \"Expenses.ingest\": the schema \"Expenses\" must be 1-63 of [a-z0-9_], not starting with a digit (one dot between schema and name, no quotes)",
            ),
            (
                "kind = \"procedure\"\nprocedure = \"expenses.ingest; DROP TABLE x\"",
                "target.procedure: \"expenses.ingest; DROP TABLE x\": the procedure name \"ingest; DROP TABLE x\" must be 1-63 of [a-z0-9_], not starting with a digit (one dot between schema and name, no quotes)",
            ),
            (
                "kind = \"procedure\"\nprocedure = \"a.b.c\"",
                "target.procedure: \"a.b.c\": the procedure name \"b.c\" must be 1-63 of [a-z0-9_], not starting with a digit (one dot between schema and name, no quotes)",
            ),
            (
                "kind = \"procedure\"\nprocedure = \".ingest\"",
                "target.procedure: \".ingest\": the schema \"\" must be 1-63 of [a-z0-9_], not starting with a digit (one dot between schema and name, no quotes)",
            ),
            (
                "kind = \"procedure\"\nprocedure = \"\\\"expenses\\\".\\\"ingest\\\"\"",
                "target.procedure: \"\\\"expenses\\\".\\\"ingest\\\"\": the schema \"\\\"expenses\\\"\" must be 1-63 of [a-z0-9_], not starting with a digit (one dot between schema and name, no quotes)",
            ),
            (
                "kind = \"table\"",
                "target.kind: unknown variant `table`, expected `sluice` or `procedure`",
            ),
            ("kinds = \"sluice\"", "target.kinds: unknown field `kinds`"),
        ];
        for (toml, want) in cases {
            let got = problems(toml);
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "{toml}: want {want:?}, got {got:?}"
            );
        }
    }
}
