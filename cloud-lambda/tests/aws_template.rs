//! The shape of `deploy/aws/template.yaml` where cfn-lint cannot judge it: a function fed by an
//! SQS event source has no reserved concurrency (its pollers' invocations would be throttled,
//! and throttled receives count towards `maxReceiveCount`, pushing reports to the DLQ) and is
//! bounded by its event source's `ScalingConfig` instead; and the status DLQ can be moved back
//! (its ARN an output, the alarm saying how).
//!
//! The template is read as indented `key: value` lines (maps only; list items and block text
//! are kept as leaves), which is all these checks navigate.

use std::path::PathBuf;

/// One `key: value` line and what is indented under it.
#[derive(Debug, Default)]
struct Node {
    key: String,
    value: String,
    children: Vec<Node>,
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|n| n.key == key)
    }

    fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The value and every line under it, as one text.
    fn text(&self) -> String {
        let mut out = self.value.clone();
        for child in &self.children {
            out.push(' ');
            if child.key != "-" && !child.value.is_empty() {
                out.push_str(&child.key);
                out.push_str(": ");
            } else if child.key != "-" {
                out.push_str(&child.key);
            }
            out.push_str(&child.text());
        }
        out
    }
}

fn parse(yaml: &str) -> Node {
    // (indent, path of child indexes from the root)
    let mut root = Node::default();
    let mut stack: Vec<(usize, Vec<usize>)> = vec![];
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let (key, value) = if let Some(item) = trimmed.strip_prefix("- ") {
            ("-".to_owned(), item.trim().to_owned())
        } else {
            match trimmed.split_once(": ") {
                Some((k, v)) if !k.contains(' ') => (k.to_owned(), v.trim().to_owned()),
                _ => match trimmed.strip_suffix(':') {
                    Some(k) if !k.contains(' ') => (k.to_owned(), String::new()),
                    _ => ("-".to_owned(), trimmed.to_owned()),
                },
            }
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let parent_path = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let parent = parent_path
            .iter()
            .fold(&mut root, |node, &i| &mut node.children[i]);
        parent.children.push(Node {
            key,
            value,
            children: vec![],
        });
        let mut path = parent_path;
        path.push(parent.children.len() - 1);
        stack.push((indent, path));
    }
    root
}

fn template() -> Node {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/aws/template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&text)
}

#[test]
fn functions_fed_by_sqs_have_no_reserved_concurrency_and_a_maximum_concurrency() {
    let t = template();
    assert!(
        t.at(&["Globals", "Function", "ReservedConcurrentExecutions"])
            .is_none(),
        "Globals would reserve concurrency for every function, the SQS-fed ones too"
    );
    let resources = t.get("Resources").expect("Resources");
    let mut fed_by_sqs = vec![];
    for r in &resources.children {
        let kind = r.get("Type").map(|n| n.value.as_str());
        if !matches!(
            kind,
            Some("AWS::Serverless::Function" | "AWS::Lambda::Function")
        ) {
            continue;
        }
        let sqs_events: Vec<&Node> = r
            .at(&["Properties", "Events"])
            .map(|e| e.children.iter())
            .into_iter()
            .flatten()
            .filter(|e| e.get("Type").is_some_and(|t| t.value == "SQS"))
            .collect();
        if sqs_events.is_empty() {
            continue;
        }
        fed_by_sqs.push(r.key.as_str());
        assert!(
            r.at(&["Properties", "ReservedConcurrentExecutions"])
                .is_none(),
            "{} is fed by an SQS event source and has ReservedConcurrentExecutions: \
             throttled invocations push messages to the DLQ; use the event source's \
             ScalingConfig: MaximumConcurrency",
            r.key
        );
        for e in sqs_events {
            let max = e
                .at(&["Properties", "ScalingConfig", "MaximumConcurrency"])
                .unwrap_or_else(|| {
                    panic!(
                        "{}'s SQS event {} has no ScalingConfig: MaximumConcurrency",
                        r.key, e.key
                    )
                });
            let n: u32 = max.value.parse().unwrap_or(0);
            assert!(
                (2..=1000).contains(&n),
                "{}'s MaximumConcurrency {:?} is not within 2..=1000",
                r.key,
                max.value
            );
        }
    }
    assert!(
        fed_by_sqs.contains(&"StatusFunction"),
        "the status function is fed by the status queue: {fed_by_sqs:?}"
    );
}

#[test]
fn the_status_dlq_can_be_moved_back_and_its_alarm_says_how() {
    dlq_can_be_moved_back(
        "StatusDeadLetterAlarm",
        ("StatusDeadLetterQueueArn", "StatusDeadLetterQueue"),
        ("StatusQueueArn", "StatusQueue"),
    );
}

/// A photo event the photo function could not check waits in its DLQ; past its upload
/// deadline its photo would be refused `image_missing`, so an alarm fires at once and says how
/// to move it back.
#[test]
fn the_photo_events_dlq_alarms_and_can_be_moved_back() {
    dlq_can_be_moved_back(
        "PhotoEventsDeadLetterAlarm",
        (
            "PhotoEventsDeadLetterQueueArn",
            "PhotoEventsDeadLetterQueue",
        ),
        ("PhotoEventsQueueArn", "PhotoEventsQueue"),
    );
    let t = template();
    let errors = t
        .at(&["Resources", "PhotoErrorsAlarm", "Properties"])
        .expect("an alarm on the photo function's errors")
        .text();
    assert!(errors.contains("!Ref PhotoFunction"), "{errors}");
}

/// The DLQ's and its queue's ARNs are outputs, `alarm` names both and the move command, and
/// operators may start the move.
fn dlq_can_be_moved_back(
    alarm: &str,
    (dlq_output, dlq): (&str, &str),
    (queue_output, queue): (&str, &str),
) {
    let t = template();
    let outputs = t.get("Outputs").expect("Outputs");
    for (name, value) in [
        (dlq_output, format!("!GetAtt {dlq}.Arn")),
        (queue_output, format!("!GetAtt {queue}.Arn")),
    ] {
        assert_eq!(
            outputs.at(&[name, "Value"]).map(|n| n.value.as_str()),
            Some(value.as_str()),
            "output {name}"
        );
    }
    let text = t
        .at(&["Resources", alarm, "Properties", "AlarmDescription"])
        .unwrap_or_else(|| panic!("the alarm {alarm}"))
        .text();
    for named in ["aws sqs start-message-move-task", dlq_output, queue_output] {
        assert!(text.contains(named), "{alarm} names {named:?}: {text}");
    }
    let operator = t
        .at(&["Resources", "OperatorPolicy"])
        .expect("OperatorPolicy")
        .text();
    assert!(
        operator.contains("sqs:StartMessageMoveTask")
            && operator.contains(&format!("!GetAtt {dlq}.Arn")),
        "operators may move {dlq} back"
    );
}
