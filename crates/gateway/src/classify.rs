//! Where a tool's risk class comes from: an ordered chain of classifiers, each asked in turn
//! about a tool as the upstream listed it, the first that knows it deciding. The standard chain
//! is the EKS catalogue (the class of each of its tools, per `operation` for the two
//! `manage_*` tools), then the tool's own MCP annotations ([`annotation_class`]), so `class:`
//! rules work for a server that is not in the catalogue. The chain is given to the gateway
//! (`GatewayOptions::classifiers`); the session core never looks the catalogue up itself, and
//! `tollgate explain` and `tollgate check --catalog` classify with the same chain.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use tollgate_policy::{Annotation, RiskClass};

/// One source of tool classes.
pub trait Classifier: Send + Sync + std::fmt::Debug {
    /// What this classifier knows of the tool `listed` (one entry of a `tools/list` answer:
    /// its `name`, `annotations`, `inputSchema`), or `None` to let the next one decide.
    fn classify(&self, listed: &Value) -> Option<ToolClass>;
}

/// What a classifier said of a tool.
#[derive(Debug, Clone, Copy)]
pub enum ToolClass {
    /// A catalogue entry: the class of a call may depend on its `operation`.
    Catalogued(&'static tollgate_catalog::CatalogTool),
    /// The class the tool's annotations give, the same for every call.
    Annotated(RiskClass),
}

impl ToolClass {
    /// The class of one call with `arguments` (as the gateway decides on them): for a
    /// catalogued tool its operation's class, or the tool's worst case; for an annotated tool
    /// the annotations' class.
    pub fn call_class(&self, arguments: &Value) -> RiskClass {
        match self {
            ToolClass::Catalogued(tool) => policy_class(tool.class_for(arguments)),
            ToolClass::Annotated(class) => *class,
        }
    }

    /// The tool's worst-case class (no `operation`, or one the catalogue does not list).
    pub fn worst(&self) -> RiskClass {
        match self {
            ToolClass::Catalogued(tool) => policy_class(tool.class),
            ToolClass::Annotated(class) => *class,
        }
    }

    /// Every class a call of the tool can have: the worst case, then each operation's.
    pub fn classes(&self) -> Vec<RiskClass> {
        let mut all = vec![self.worst()];
        if let ToolClass::Catalogued(tool) = self {
            all.extend(tool.operation_classes.values().map(|k| policy_class(*k)));
        }
        all
    }

    /// The tool's catalogue entry, when a catalogue classified it.
    pub fn catalogued(&self) -> Option<&'static tollgate_catalog::CatalogTool> {
        match self {
            ToolClass::Catalogued(tool) => Some(tool),
            ToolClass::Annotated(_) => None,
        }
    }
}

/// The catalogue's risk class as the policy engine's (the engine does not know the catalogue).
pub fn policy_class(class: tollgate_catalog::RiskClass) -> RiskClass {
    match class {
        tollgate_catalog::RiskClass::Read => RiskClass::Read,
        tollgate_catalog::RiskClass::Write => RiskClass::Write,
        tollgate_catalog::RiskClass::Execute => RiskClass::Execute,
        tollgate_catalog::RiskClass::Destructive => RiskClass::Destructive,
    }
}

/// Classes the tools of a catalogue by name.
#[derive(Debug, Clone, Copy)]
pub struct CatalogClassifier(pub &'static tollgate_catalog::Catalog);

impl Classifier for CatalogClassifier {
    fn classify(&self, listed: &Value) -> Option<ToolClass> {
        let name = listed.get("name").and_then(Value::as_str)?;
        self.0.get(name).map(ToolClass::Catalogued)
    }
}

/// Classes any tool by its MCP annotations ([`annotation_class`]); it knows every tool.
#[derive(Debug, Clone, Copy)]
pub struct AnnotationClassifier;

impl Classifier for AnnotationClassifier {
    fn classify(&self, listed: &Value) -> Option<ToolClass> {
        Some(ToolClass::Annotated(annotation_class(
            listed.get("annotations"),
        )))
    }
}

/// The class a tool's MCP annotations give (docs/catalog.md, "Tools outside the catalogue").
/// The specification's defaults stand for a hint left out (`readOnlyHint` false,
/// `destructiveHint` true), and a hint that is not a boolean counts as left out:
///
/// - `readOnlyHint: true` → read (whatever else it says);
/// - otherwise `destructiveHint: false` → write (it changes things, additively);
/// - otherwise → destructive: `destructiveHint: true`, or a tool that says nothing about
///   itself, which the specification tells clients to treat as possibly destructive.
///
/// `idempotentHint` and `openWorldHint` do not change the class (they stay selectable with
/// `annotation:` selectors). No annotation gives `execute`.
pub fn annotation_class(annotations: Option<&Value>) -> RiskClass {
    let hint = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_bool);
    if hint("readOnlyHint") == Some(true) {
        RiskClass::Read
    } else if hint("destructiveHint") == Some(false) {
        RiskClass::Write
    } else {
        RiskClass::Destructive
    }
}

/// The annotation hints that are true for a tool listed with `annotations`, as `annotation:`
/// selectors match them (`destructiveHint` means nothing on a read-only tool, per the
/// specification).
pub fn annotation_set(annotations: Option<&Value>) -> BTreeSet<Annotation> {
    let hint = |k: &str| {
        annotations
            .and_then(|a| a.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut set = BTreeSet::new();
    if hint("readOnlyHint") {
        set.insert(Annotation::ReadOnly);
    } else if hint("destructiveHint") {
        set.insert(Annotation::Destructive);
    }
    if hint("idempotentHint") {
        set.insert(Annotation::Idempotent);
    }
    if hint("openWorldHint") {
        set.insert(Annotation::OpenWorld);
    }
    set
}

/// An ordered chain of classifiers: the first that knows a tool decides its class.
#[derive(Debug, Clone)]
pub struct Classifiers(Arc<[Arc<dyn Classifier>]>);

impl Classifiers {
    pub fn new(chain: Vec<Arc<dyn Classifier>>) -> Classifiers {
        Classifiers(chain.into())
    }

    /// The catalogue `catalog`, then the annotations.
    pub fn with_catalog(catalog: &'static tollgate_catalog::Catalog) -> Classifiers {
        Classifiers::new(vec![
            Arc::new(CatalogClassifier(catalog)),
            Arc::new(AnnotationClassifier),
        ])
    }

    /// The embedded EKS catalogue, then the annotations: what the gateway uses.
    pub fn standard() -> Classifiers {
        Classifiers::with_catalog(tollgate_catalog::Catalog::embedded())
    }

    /// What the first classifier that knows the tool `listed` says of it.
    pub fn classify(&self, listed: &Value) -> Option<ToolClass> {
        self.0.iter().find_map(|c| c.classify(listed))
    }
}

impl Default for Classifiers {
    fn default() -> Classifiers {
        Classifiers::standard()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// The documented mapping, case by case.
    #[test]
    fn annotations_map_to_the_documented_classes() {
        let cases = [
            (json!({"readOnlyHint": true}), RiskClass::Read),
            (
                json!({"readOnlyHint": true, "destructiveHint": true}),
                RiskClass::Read,
            ),
            (json!({"destructiveHint": false}), RiskClass::Write),
            (
                json!({"destructiveHint": false, "idempotentHint": true}),
                RiskClass::Write,
            ),
            (
                json!({"readOnlyHint": false, "destructiveHint": false}),
                RiskClass::Write,
            ),
            (json!({"destructiveHint": true}), RiskClass::Destructive),
            (json!({"idempotentHint": true}), RiskClass::Destructive),
            (json!({"openWorldHint": false}), RiskClass::Destructive),
            (json!({}), RiskClass::Destructive),
            (json!({"readOnlyHint": "yes"}), RiskClass::Destructive),
        ];
        for (annotations, class) in cases {
            assert_eq!(annotation_class(Some(&annotations)), class, "{annotations}");
        }
        assert_eq!(
            annotation_class(None),
            RiskClass::Destructive,
            "no annotations"
        );
    }

    /// The catalogue decides for its tools, whatever the upstream's annotations say; the
    /// annotations decide for the others.
    #[test]
    fn the_catalogue_comes_before_the_annotations() {
        let chain = Classifiers::standard();
        let listed = json!({"name": "DeleteAHORunBatch", "annotations": {"readOnlyHint": true}});
        let class = chain.classify(&listed).unwrap();
        assert!(class.catalogued().is_some());
        assert_eq!(class.worst(), RiskClass::Destructive);
        let other = json!({"name": "lookup_ticket", "annotations": {"readOnlyHint": true}});
        let class = chain.classify(&other).unwrap();
        assert!(class.catalogued().is_none());
        assert_eq!(class.call_class(&json!({})), RiskClass::Read);
        assert_eq!(class.classes(), vec![RiskClass::Read]);
    }

    /// A chain without the annotation classifier knows only the catalogue's tools.
    #[test]
    fn a_chain_of_the_catalogue_alone_knows_only_its_tools() {
        let chain = Classifiers::new(vec![Arc::new(CatalogClassifier(
            tollgate_catalog::Catalog::embedded(),
        ))]);
        assert!(chain.classify(&json!({"name": "lookup_ticket"})).is_none());
        assert!(chain.classify(&json!({"name": "get_pod_logs"})).is_some());
    }

    fn hint() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(json!(true))),
            Just(Some(json!(false))),
            Just(Some(json!("true"))),
            Just(Some(json!(null))),
        ]
    }

    proptest! {
        /// Whatever the annotations, a tool is read only when it says `readOnlyHint: true`,
        /// and never less than destructive when it says `destructiveHint: true` without it:
        /// no annotation can make a tool look safer than it says it is.
        #[test]
        fn only_read_only_tools_are_read_and_destructive_tools_stay_destructive(
            read_only in hint(),
            destructive in hint(),
            idempotent in hint(),
            open_world in hint(),
        ) {
            let mut a = serde_json::Map::new();
            for (k, v) in [
                ("readOnlyHint", read_only.clone()),
                ("destructiveHint", destructive.clone()),
                ("idempotentHint", idempotent),
                ("openWorldHint", open_world),
            ] {
                if let Some(v) = v {
                    a.insert(k.to_owned(), v);
                }
            }
            let class = annotation_class(Some(&Value::Object(a)));
            let says_read_only = read_only == Some(json!(true));
            prop_assert_eq!(class == RiskClass::Read, says_read_only);
            if !says_read_only && destructive != Some(json!(false)) {
                prop_assert_eq!(class, RiskClass::Destructive);
            }
            prop_assert_ne!(class, RiskClass::Execute);
        }
    }
}
