//! The checker's tests: the module docs' example verbatim, each kind of violation with its
//! message, the history format's round trip and errors, and generated histories that exercise
//! the linearizability search at scale.

use std::collections::BTreeMap;

use super::*;

fn run(lines: &str) -> Result<Summary, Violation> {
    check(&History::parse(lines).expect("test history parses"))
}

fn violation(lines: &str) -> Violation {
    match run(lines) {
        Ok(summary) => panic!("expected a violation, the history passed: {summary}"),
        Err(violation) => violation,
    }
}

fn passes(lines: &str) -> Summary {
    match run(lines) {
        Ok(summary) => summary,
        Err(violation) => panic!("expected a pass: {violation}"),
    }
}

/// The example of the module docs, verbatim.
const DOC_EXAMPLE: &str = r#"
{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":10,"op":{"type":"transfer","from":1,"to":2,"amount":30}}
{"type":"invoke","process":1,"time_us":12,"op":{"type":"read","accounts":[1,2]}}
{"type":"ok","process":1,"time_us":15,"result":{"balances":{"1":70,"2":30}}}
{"type":"ok","process":0,"time_us":20,"result":{"from_balance":70,"to_balance":30}}
{"type":"invoke","process":1,"time_us":21,"op":{"type":"deposit","account":2,"amount":5}}
{"type":"info","process":1,"time_us":90,"error":"timeout"}
{"type":"invoke","process":0,"time_us":95,"op":{"type":"withdraw","account":1,"amount":500}}
{"type":"fail","process":0,"time_us":99,"observation":{"kind":"insufficient_funds","balance":70}}
{"type":"final","branch":1,"balances":{"1":70,"2":35},"digest":"9f2c"}
{"type":"final","branch":2,"balances":{"1":70,"2":35},"digest":"9f2c"}
"#;

#[test]
fn doc_example_passes_with_an_indeterminate_deposit_that_happened() {
    let summary = passes(DOC_EXAMPLE);
    assert_eq!(summary.operations, 4);
    assert_eq!(
        (summary.ok, summary.failed, summary.indeterminate),
        (2, 1, 1)
    );
    assert_eq!(summary.accounts, 2);
    assert_eq!(summary.branches, 2);
    // The read is exact (a transfer does not change the total); the finals are not (the
    // indeterminate deposit may or may not count).
    assert_eq!((summary.totals_checked, summary.totals_exact), (3, 1));
    assert!(summary
        .to_string()
        .starts_with("history passes: 4 operations"));
}

#[test]
fn indeterminate_deposit_that_did_not_happen_passes() {
    let history = DOC_EXAMPLE.replace(r#""2":35"#, r#""2":30"#);
    passes(&history);
}

#[test]
fn concurrent_operations_are_reordered() {
    // Process 0 invokes first but its deposit takes effect after process 1's.
    passes(
        r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"invoke","process":1,"time_us":10,"op":{"type":"deposit","account":1,"amount":20}}
{"type":"ok","process":1,"time_us":20,"result":{"balance":120}}
{"type":"invoke","process":2,"time_us":30,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":2,"time_us":40,"result":{"balances":{"1":120}}}
{"type":"ok","process":0,"time_us":100,"result":{"balance":170}}
{"type":"invoke","process":2,"time_us":110,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":2,"time_us":120,"result":{"balances":{"1":170}}}
"#,
    );
}

#[test]
fn indeterminate_withdrawal_seen_by_a_later_read_passes() {
    passes(
        r#"
{"type":"invoke","process":0,"time_us":0,"op":{"type":"open","account":4,"balance":100}}
{"type":"ok","process":0,"time_us":5,"result":{"balance":100}}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":4,"amount":40}}
{"type":"info","process":0,"time_us":50}
{"type":"invoke","process":1,"time_us":60,"op":{"type":"read","accounts":[4]}}
{"type":"ok","process":1,"time_us":70,"result":{"balances":{"4":100}}}
{"type":"invoke","process":1,"time_us":80,"op":{"type":"read","accounts":[4]}}
{"type":"ok","process":1,"time_us":90,"result":{"balances":{"4":60}}}
"#,
    );
}

#[test]
fn plain_failures_are_dropped_and_refusals_constrain() {
    passes(
        r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"fail","process":0,"time_us":5,"error":"not the leader"}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":1,"amount":101}}
{"type":"fail","process":0,"time_us":9,"observation":{"kind":"insufficient_funds","balance":100}}
{"type":"final","branch":1,"balances":{"1":100}}
"#,
    );
    // A refusal for insufficient funds while the balance covered the withdrawal.
    let refused = violation(
        r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":1,"amount":60}}
{"type":"fail","process":0,"time_us":9,"observation":{"kind":"insufficient_funds"}}
"#,
    );
    assert!(
        matches!(
            refused,
            Violation::NotLinearizable {
                account: 1,
                prefix_ops: 0,
                state: Some((100, 0)),
                ..
            }
        ),
        "{refused}"
    );
}

#[test]
fn stale_read_after_an_acknowledged_deposit() {
    let found = violation(
        r#"
{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
{"type":"invoke","process":1,"time_us":20,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":1,"time_us":30,"result":{"balances":{"1":100}}}
"#,
    );
    let Violation::NotLinearizable {
        account,
        subject,
        prefix_ops,
        state,
        ..
    } = &found
    else {
        panic!("expected NotLinearizable, got {found}");
    };
    assert_eq!((*account, *prefix_ops, *state), (1, 1, Some((150, 0))));
    assert!(matches!(subject, Subject::Op(op) if op.process == 1 && op.line == 5));
    assert_eq!(
        found.to_string(),
        "account 1 is not linearizable: no order of its operations explains process 1's \
         read of accounts [1] (line 5, invoked at 20 µs, ok at 30 µs), which reads balance \
         100; after the 1 operation(s) that can come before it (the last: process 0's \
         deposit of 50 into account 1 (line 3, invoked at 0 µs, ok at 10 µs)), the balance \
         is 150"
    );
    // The picture blames what the message names: the read, then the deposit before it.
    assert_eq!(
        found.blame(),
        Blame {
            operations: vec![5, 3],
            branches: vec![]
        }
    );
}

#[test]
fn acknowledged_deposit_lost_by_the_branches() {
    let found = violation(
        r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
{"type":"final","branch":1,"balances":{"1":100}}
{"type":"final","branch":2,"balances":{"1":100}}
"#,
    );
    assert!(
        matches!(
            &found,
            Violation::NotLinearizable {
                account: 1,
                subject: Subject::Final { branch: 1 },
                state: Some((150, 0)),
                ..
            }
        ),
        "{found}"
    );
    assert!(found
        .to_string()
        .contains("branch 1's final state, which reads balance 100"));
}

#[test]
fn acknowledged_deposit_overwritten_by_a_later_one() {
    let found = violation(
        r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
{"type":"invoke","process":1,"time_us":20,"op":{"type":"deposit","account":1,"amount":20}}
{"type":"ok","process":1,"time_us":30,"result":{"balance":120}}
"#,
    );
    assert!(
        matches!(&found, Violation::NotLinearizable { account: 1, subject: Subject::Op(op), .. } if op.process == 1),
        "{found}"
    );
    assert!(
        found.to_string().contains("changes it by 20 to 120"),
        "{found}"
    );
}

#[test]
fn read_of_all_accounts_that_sums_wrong() {
    // Each account on its own is linearizable (the read is concurrent with the transfer)
    // but the read saw the withdrawal and not the deposit: money vanished.
    let found = violation(
        r#"
{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"transfer","from":1,"to":2,"amount":30}}
{"type":"invoke","process":1,"time_us":5,"op":{"type":"read","accounts":[1,2]}}
{"type":"ok","process":1,"time_us":15,"result":{"balances":{"1":70,"2":0}}}
{"type":"ok","process":0,"time_us":10,"result":{"from_balance":70,"to_balance":30}}
"#,
    );
    assert!(
        matches!(
            &found,
            Violation::NotConserved {
                total: 70,
                expected_min: 100,
                expected_max: 100,
                accounts: 2,
                ..
            }
        ),
        "{found}"
    );
    assert!(
        found
            .to_string()
            .contains("totals 70 over 2 accounts, but the total must be 100"),
        "{found}"
    );
}

#[test]
fn total_bounds_with_concurrent_deposits() {
    // A deposit concurrent with the read may or may not count: 100..=150 both pass.
    let history = |seen: i64| {
        format!(
            r#"
{{"type":"init","balances":{{"1":100,"2":0}}}}
{{"type":"invoke","process":0,"time_us":0,"op":{{"type":"deposit","account":2,"amount":50}}}}
{{"type":"invoke","process":1,"time_us":5,"op":{{"type":"read","accounts":[1,2]}}}}
{{"type":"ok","process":1,"time_us":15,"result":{{"balances":{{"1":100,"2":{seen}}}}}}}
{{"type":"ok","process":0,"time_us":20,"result":{{"balance":50}}}}
"#
        )
    };
    passes(&history(0));
    passes(&history(50));
    assert!(matches!(
        violation(&history(20)),
        Violation::NotLinearizable { account: 2, .. }
    ));
}

#[test]
fn negative_balance_and_overdraft() {
    let found = violation(
        r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"withdraw","account":1,"amount":110}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":-10}}
"#,
    );
    assert!(
        matches!(
            &found,
            Violation::BelowMinimum {
                account: 1,
                balance: -10,
                balance_min: 0,
                ..
            }
        ),
        "{found}"
    );
    assert!(found.to_string().starts_with(
        "account 1's balance -10 is below its minimum 0, in process 0's withdrawal of 110"
    ));
    // An overdraft account may go down to its minimum, and no further.
    passes(
        r#"
{"type":"invoke","process":0,"time_us":0,"op":{"type":"open","account":3,"balance":0,"balance_min":-50}}
{"type":"ok","process":0,"time_us":5,"result":{"balance":0}}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":3,"amount":50}}
{"type":"ok","process":0,"time_us":9,"result":{"balance":-50}}
{"type":"invoke","process":0,"time_us":10,"op":{"type":"withdraw","account":3,"amount":1}}
{"type":"fail","process":0,"time_us":12,"observation":{"kind":"insufficient_funds","balance":-50}}
"#,
    );
    // Histories written before the field was named `balance_min` spell it `min_balance`
    // (and `min_balances` in `init`): both are read, and the floor still holds.
    let found = violation(
        r#"
{"type":"init","balances":{"1":0},"min_balances":{"1":-20}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"open","account":3,"balance":0,"min_balance":-50}}
{"type":"ok","process":0,"time_us":5,"result":{"balance":0}}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":1,"amount":21}}
{"type":"ok","process":0,"time_us":9,"result":{"balance":-21}}
"#,
    );
    assert!(
        matches!(
            &found,
            Violation::BelowMinimum {
                account: 1,
                balance: -21,
                balance_min: -20,
                ..
            }
        ),
        "{found}"
    );
}

#[test]
fn divergent_final_states() {
    let found = violation(
        r#"
{"type":"init","balances":{"1":100,"2":5}}
{"type":"final","branch":1,"balances":{"1":100,"2":5},"digest":"a"}
{"type":"final","branch":2,"balances":{"1":100,"2":5},"digest":"a"}
{"type":"final","branch":3,"balances":{"1":100},"digest":"b"}
"#,
    );
    assert_eq!(
        found,
        Violation::Divergence {
            branch: 1,
            other_branch: 3,
            account: 2,
            balance: Some(5),
            other_balance: None,
        }
    );
    assert_eq!(
        found.to_string(),
        "branches 1 and 3 diverged: account 2 is 5 on branch 1 and missing on branch 3"
    );
    assert_eq!(
        found.blame(),
        Blame {
            operations: vec![],
            branches: vec![1, 3]
        }
    );
    let digests = violation(
        r#"
{"type":"final","branch":1,"balances":{},"digest":"a"}
{"type":"final","branch":2,"balances":{},"digest":"b"}
"#,
    );
    assert!(matches!(
        digests,
        Violation::DigestMismatch {
            branch: 1,
            other_branch: 2,
            ..
        }
    ));
}

#[test]
fn ill_formed_histories() {
    assert_eq!(
        violation(r#"{"type":"ok","process":3,"time_us":7}"#),
        Violation::CompletionWithoutInvoke {
            line: 1,
            process: 3,
            time_us: 7
        }
    );
    assert_eq!(
        violation(
            r#"{"type":"invoke","process":3,"time_us":7,"op":{"type":"read","accounts":[1]}}
{"type":"invoke","process":3,"time_us":8,"op":{"type":"read","accounts":[1]}}"#
        ),
        Violation::DoubleInvoke {
            process: 3,
            first_line: 1,
            second_line: 2
        }
    );
    let backwards = violation(
        r#"{"type":"invoke","process":3,"time_us":7,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":3,"time_us":6,"result":{"balances":{}}}"#,
    );
    assert!(
        matches!(
            backwards,
            Violation::IllFormed {
                line: 2,
                operation: Some(1),
                ..
            }
        ),
        "{backwards}"
    );
    assert_eq!(backwards.blame().operations, [1]);
    let wrong_result = violation(
        r#"{"type":"invoke","process":3,"time_us":7,"op":{"type":"deposit","account":1,"amount":5}}
{"type":"ok","process":3,"time_us":8,"result":{"from_balance":5}}"#,
    );
    assert!(
        wrong_result
            .to_string()
            .contains("may only carry \"balance\""),
        "{wrong_result}"
    );
}

#[test]
fn malformed_lines_name_the_line() {
    let unknown = History::parse(
        "\n{\"type\":\"invoke\",\"process\":1,\"time_us\":0,\"op\":{\"type\":\"steal\",\"account\":1}}",
    )
    .expect_err("an unknown op is refused");
    let message = unknown.to_string();
    assert!(
        message.starts_with("line 2: unknown variant `steal`"),
        "{message}"
    );
    let broken = History::parse("{\"type\":\"final\"").expect_err("not JSON");
    assert!(broken.to_string().starts_with("line 1: "), "{broken}");
    let key = History::parse(r#"{"type":"init","balances":{"one":1}}"#)
        .expect_err("account keys are numbers");
    assert!(
        key.to_string()
            .contains("account \"one\" is not an account id"),
        "{key}"
    );
}

#[test]
fn writer_round_trips() {
    let events = vec![
        HistoryEvent::Init {
            balances: BTreeMap::from([(1, 10)]),
            balances_min: BTreeMap::new(),
        },
        HistoryEvent::Invoke {
            process: 0,
            time_us: 1,
            op: Op::Read { accounts: vec![1] },
        },
        HistoryEvent::Ok {
            process: 0,
            time_us: 2,
            result: OpResult::read(BTreeMap::from([(1, 10)])),
        },
        HistoryEvent::Final {
            branch: 1,
            balances: BTreeMap::from([(1, 10)]),
            digest: None,
        },
    ];
    let mut writer = HistoryWriter::new(Vec::new());
    for event in &events {
        writer.write(event).expect("write to memory");
    }
    let text = String::from_utf8(writer.into_inner()).expect("utf-8");
    assert_eq!(
        text.lines().nth(2),
        Some(r#"{"type":"ok","process":0,"time_us":2,"result":{"balances":{"1":10}}}"#)
    );
    let history = History::parse(&text).expect("parses");
    assert_eq!(history.events().cloned().collect::<Vec<_>>(), events);
    passes(&text);
}

#[test]
fn search_bound_reports_inconclusive() {
    let history = History::parse(DOC_EXAMPLE).expect("parses");
    let found = check_with(
        &history,
        &Limits {
            search_steps_max: 1,
        },
    )
    .expect_err("one step is not enough");
    assert!(
        matches!(
            found,
            Violation::Inconclusive {
                search_steps: 1,
                ..
            }
        ),
        "{found}"
    );
}

/// xorshift64: deterministic test histories without a dependency.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// A linearizable history on one account: `processes` customers, `ops` operations with
/// overlapping random intervals, each taking effect at a random instant inside its interval;
/// `info_per_mille` of them are indeterminate (and take effect half the time).
fn generated_history(
    processes: u64,
    ops: u64,
    info_per_mille: u64,
    seed: u64,
) -> Vec<HistoryEvent> {
    struct Planned {
        process: u64,
        call: u64,
        ret: u64,
        at: u64,
        op: Op,
    }
    let mut random = Random(seed);
    let mut planned = Vec::new();
    for process in 0..processes {
        let mut time = random.below(100);
        for _ in 0..ops / processes {
            let duration = 1 + random.below(200);
            let op = match random.below(10) {
                0..=3 => Op::Deposit {
                    account: 1,
                    amount: 1 + random.below(100) as i64,
                },
                4..=6 => Op::Withdraw {
                    account: 1,
                    amount: 1 + random.below(150) as i64,
                },
                _ => Op::Read { accounts: vec![1] },
            };
            planned.push(Planned {
                process,
                call: time,
                ret: time + duration,
                at: time * 64 + random.below(duration * 64),
                op,
            });
            time += duration + random.below(50);
        }
    }
    planned.sort_by_key(|p| p.at);
    let mut balance = 1000i64;
    let mut events = Vec::new();
    for p in &planned {
        let indeterminate = random.below(1000) < info_per_mille;
        let takes_effect = !indeterminate || random.below(2) == 0;
        let completion = match &p.op {
            Op::Deposit { amount, .. } => {
                if takes_effect {
                    balance += amount;
                }
                HistoryEvent::Ok {
                    process: p.process,
                    time_us: p.ret,
                    result: OpResult::balance(balance),
                }
            }
            Op::Withdraw { amount, .. } if balance - amount < 0 => HistoryEvent::Fail {
                process: p.process,
                time_us: p.ret,
                observation: Some(Observation::InsufficientFunds {
                    balance: Some(balance),
                }),
                error: None,
            },
            Op::Withdraw { amount, .. } => {
                if takes_effect {
                    balance -= amount;
                }
                HistoryEvent::Ok {
                    process: p.process,
                    time_us: p.ret,
                    result: OpResult::balance(balance),
                }
            }
            _ => HistoryEvent::Ok {
                process: p.process,
                time_us: p.ret,
                result: OpResult::read(BTreeMap::from([(1, balance)])),
            },
        };
        let completion = if indeterminate {
            HistoryEvent::Info {
                process: p.process,
                time_us: p.ret,
                error: None,
            }
        } else {
            completion
        };
        let invoke = HistoryEvent::Invoke {
            process: p.process,
            time_us: p.call,
            op: p.op.clone(),
        };
        events.push((p.call, 1, invoke));
        events.push((p.ret, 0, completion));
    }
    // Completions before invokes at the same time: a process's next invoke may share it.
    events.sort_by_key(|(time, order, _)| (*time, *order));
    let mut history = vec![HistoryEvent::Init {
        balances: BTreeMap::from([(1, 1000)]),
        balances_min: BTreeMap::new(),
    }];
    history.extend(events.into_iter().map(|(_, _, event)| event));
    history.push(HistoryEvent::Final {
        branch: 1,
        balances: BTreeMap::from([(1, balance)]),
        digest: None,
    });
    history
}

/// Timings (this machine, optimised): 16 processes, 1% indeterminate: 0.05 s; 32
/// processes, 1% indeterminate: 0.6 s; 64 processes, none indeterminate: 1.4 s. In the
/// unoptimised test build about ten times that, so the 64-process case is kept smaller.
#[test]
fn ten_thousand_operations_by_16_processes_on_one_account() {
    let history = History::from_events(generated_history(16, 10_000, 10, 0x5eed));
    let summary = passes_history(&history);
    assert_eq!(summary.operations, 10_000);
    assert!(summary.indeterminate > 50, "{summary}");
}

#[test]
fn two_thousand_operations_by_64_processes_on_one_account() {
    let history = History::from_events(generated_history(64, 2_048, 0, 0x5eed));
    assert_eq!(passes_history(&history).operations, 2_048);
}

fn passes_history(history: &History) -> Summary {
    match check(history) {
        Ok(summary) => summary,
        Err(violation) => panic!("expected a pass: {violation}"),
    }
}

#[test]
fn generated_history_with_one_wrong_read_is_refuted() {
    let mut events = generated_history(8, 400, 10, 7);
    // The middle read sees one unit more than the balance it really had.
    let reads: Vec<usize> = (0..events.len())
        .filter(
            |&i| matches!(&events[i], HistoryEvent::Ok { result, .. } if result.balances.is_some()),
        )
        .collect();
    let HistoryEvent::Ok { result, .. } = &mut events[reads[reads.len() / 2]] else {
        unreachable!("filtered on reads");
    };
    let Some(balance) = result.balances.as_mut().and_then(|b| b.get_mut(&1)) else {
        panic!("a generated read reads account 1");
    };
    *balance += 1;
    let found = check(&History::from_events(events)).expect_err("refuted");
    assert!(
        matches!(found, Violation::NotLinearizable { account: 1, .. }),
        "{found}"
    );
}
