//! The schedule: every step's actions (calls, rates, bursts, decisions, reloads, switches) at
//! their virtual instants, in order.

use super::*;

/// What a step expands to, at one instant: its repetition's instant, and the step's label and
/// kind, which every repetition shares (a long replay makes one per call, and copies nothing).
#[derive(Debug, Clone, Copy)]
pub(super) struct Action<'s> {
    pub(super) at: Duration,
    /// `3` for the third step, `3.2` for the second member of the third step's group.
    pub(super) label: &'s Arc<str>,
    pub(super) kind: &'s ActionKind,
}

#[derive(Debug, Clone)]
pub(super) enum ActionKind {
    /// A step's parts are shared by its repetitions, not copied into each.
    Call {
        agent: Arc<str>,
        tool: Arc<str>,
        args: Arc<Value>,
        expect: Option<Arc<StepExpect>>,
    },
    Raw {
        agent: String,
        tool: String,
        raw: String,
        expect: Option<StepExpect>,
    },
    Batch {
        agent: String,
        items: Vec<(String, Value, Option<StepExpect>)>,
    },
    Reload {
        source: PolicySource,
        expect: Option<ReloadExpect>,
    },
    Faults(Switch),
    /// An `approve` (true) or `deny` (false) step.
    Decide {
        approve: bool,
        decide: Decide,
    },
}

/// The action a call step (or a group's member) repeats, with its timing.
pub(super) fn call_generator(step: &format::Step, start: Duration, label: &str) -> Generator {
    let agent = step.agent.clone().unwrap_or_default();
    let kind = match step.kind {
        StepKind::Batch => ActionKind::Batch {
            agent,
            items: step
                .batch
                .iter()
                .flatten()
                .map(|i| {
                    (
                        i.call.clone(),
                        i.args.clone().unwrap_or_else(|| json!({})),
                        i.expect.clone(),
                    )
                })
                .collect(),
        },
        StepKind::Raw => ActionKind::Raw {
            agent,
            tool: step.call.clone().unwrap_or_default(),
            raw: step.raw.clone().unwrap_or_default(),
            expect: step.expect.clone(),
        },
        _ => ActionKind::Call {
            agent: Arc::from(agent.as_str()),
            tool: Arc::from(step.call.as_deref().unwrap_or_default()),
            args: Arc::new(step.args.clone().unwrap_or_else(|| json!({}))),
            expect: step.expect.clone().map(Arc::new),
        },
    };
    Generator {
        start,
        every: step.every.unwrap_or(Duration::ZERO),
        repeat: step.repeat.unwrap_or(1),
        label: Arc::from(label),
        kind,
    }
}

/// One step's (or group member's) actions: `repeat` copies of `kind`, `every` apart from
/// `start`. A plain call's copies share its agent, tool, arguments and expectations.
pub(super) struct Generator {
    pub(super) start: Duration,
    pub(super) every: Duration,
    pub(super) repeat: u32,
    /// `3` for the third step, `3.2` for the second member of the third step's group.
    pub(super) label: Arc<str>,
    pub(super) kind: ActionKind,
}

impl Generator {
    /// When its repetition `k` happens.
    pub(super) fn at(&self, k: u32) -> Duration {
        self.start + self.every * k
    }
}

/// (instant, step, repetition, member, generator) of a generator's next action: the order of
/// the first four is the runner's.
pub(super) type NextAction = (Duration, usize, u32, usize, usize);

/// A scenario's actions in the order the runner takes them, by (instant, step, repetition,
/// member), made one at a time as the runner reaches them: a merge of the steps' generators,
/// so a step repeated 400,000 times never holds 400,000 actions at once. Every key is
/// distinct (a step's repetitions differ in `k`, a group's members in `member`), so the order
/// is the one a full sort of every action would give.
pub(super) struct Schedule {
    pub(super) generators: Vec<Generator>,
    pub(super) next: BinaryHeap<Reverse<NextAction>>,
    pub(super) remaining: u64,
}

impl Schedule {
    pub(super) fn new(scenario: &Scenario) -> Schedule {
        let mut schedule = Schedule {
            generators: Vec::new(),
            next: BinaryHeap::new(),
            remaining: 0,
        };
        let mut cursor = Duration::ZERO;
        for (i, step) in scenario.steps.iter().enumerate() {
            let label = (i + 1).to_string();
            let start = step.at.unwrap_or(cursor);
            let once = |kind| Generator {
                start,
                every: Duration::ZERO,
                repeat: 1,
                label: Arc::from(label.as_str()),
                kind,
            };
            match step.kind {
                StepKind::Advance => {
                    cursor += step.advance.unwrap_or_default();
                }
                StepKind::Reload | StepKind::Faults => {
                    let kind = match (&step.reload, step.faults) {
                        (Some(source), _) => ActionKind::Reload {
                            source: source.clone(),
                            expect: step.expect.as_ref().and_then(|e| e.reload),
                        },
                        (None, Some(s)) => ActionKind::Faults(s),
                        (None, None) => continue,
                    };
                    schedule.add(i, 0, once(kind));
                    cursor = cursor.max(start);
                }
                StepKind::Approve | StepKind::Deny => {
                    let (approve, decide) = match (&step.approve, &step.deny) {
                        (Some(d), _) => (true, d.clone()),
                        (None, Some(d)) => (false, d.clone()),
                        (None, None) => continue,
                    };
                    schedule.add(i, 0, once(ActionKind::Decide { approve, decide }));
                    cursor = cursor.max(start);
                }
                StepKind::Call | StepKind::Raw | StepKind::Batch => {
                    let g = call_generator(step, start, &label);
                    if let Some(last) = g.repeat.checked_sub(1) {
                        cursor = cursor.max(g.at(last));
                    }
                    schedule.add(i, 0, g);
                }
                StepKind::Concurrent => {
                    for (j, member) in step.concurrent.iter().flatten().enumerate() {
                        let offset = member.at.unwrap_or(Duration::ZERO);
                        let label = format!("{}.{}", i + 1, j + 1);
                        let g = call_generator(member, start + offset, &label);
                        if let Some(last) = g.repeat.checked_sub(1) {
                            cursor = cursor.max(g.at(last));
                        }
                        schedule.add(i, j, g);
                    }
                }
            }
        }
        schedule
    }

    pub(super) fn add(&mut self, step: usize, member: usize, g: Generator) {
        if g.repeat > 0 {
            self.remaining += u64::from(g.repeat);
            self.next
                .push(Reverse((g.at(0), step, 0, member, self.generators.len())));
            self.generators.push(g);
        }
    }

    /// How many actions are still to come.
    pub(super) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The instant of the next action.
    pub(super) fn peek_at(&self) -> Option<Duration> {
        self.next.peek().map(|Reverse((at, ..))| *at)
    }
}

impl Schedule {
    /// The next action, borrowed from its step's generator.
    pub(super) fn next_action(&mut self) -> Option<Action<'_>> {
        // The generator's next repetition takes its place at the top of the heap (one sift
        // down, where a pop and a push would sift twice).
        let mut top = self.next.peek_mut()?;
        let Reverse((at, step, k, member, g)) = *top;
        let generator = self.generators.get(g)?;
        if k + 1 < generator.repeat {
            *top = Reverse((generator.at(k + 1), step, k + 1, member, g));
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
        self.remaining -= 1;
        Some(Action {
            at,
            label: &generator.label,
            kind: &generator.kind,
        })
    }
}

/// One plain call of a scenario at its instant, for drivers outside the runner (`tollgate demo`).
#[derive(Debug, Clone)]
pub struct TimedCall {
    pub at: Duration,
    pub agent: String,
    pub tool: String,
    pub args: Value,
}

/// A scenario's calls in the order the runner makes them; `Err` names the first step that is
/// not a plain call (a raw message, a batch, a reload, a fault switch, an approval).
pub fn plain_calls(scenario: &Scenario) -> Result<Vec<TimedCall>, String> {
    let mut schedule = Schedule::new(scenario);
    let mut calls = Vec::new();
    while let Some(a) = schedule.next_action() {
        match a.kind {
            ActionKind::Call {
                agent, tool, args, ..
            } => calls.push(TimedCall {
                at: a.at,
                agent: agent.to_string(),
                tool: tool.to_string(),
                args: Value::clone(args),
            }),
            _ => return Err(format!("step {} is not a plain call", a.label)),
        }
    }
    Ok(calls)
}
