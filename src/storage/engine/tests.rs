use super::record::{ledger, put_varint, varint_len};
use super::*;

#[test]
fn bytes_follow_writes_deletes_undos_and_removals() {
    let mut e = Engine::default();
    put(&mut e, b"k", b"value", 1);
    put(&mut e, b"k2", b"v", 1);
    assert_eq!(e.bytes(), 6 + 3);
    put(&mut e, b"k", b"vv", 2);
    assert_eq!(e.bytes(), 3 + 3);
    let prev = e.entry(b"k");
    assert_eq!(e.apply(b"k", 3, None, None), Applied::Stored);
    assert_eq!(e.bytes(), 3, "a tombstone holds no value");
    assert!(e.restore(b"k", 3, prev));
    assert_eq!(e.bytes(), 6);
    assert_eq!(e.remove_where(|_| true), 2);
    assert_eq!(e.bytes(), 0);
}

fn put(e: &mut Engine, k: &[u8], v: &[u8], version: u64) {
    assert_eq!(e.apply(k, version, Some(v), None), Applied::Stored);
}

#[test]
fn tombstones_go_only_at_their_version_and_refused_writes_are_undone() {
    let mut e = Engine::default();
    put(&mut e, b"k", b"v", 5);
    // Not a tombstone: stays.
    assert!(!e.remove_tombstone(b"k", 5));
    assert_eq!(e.apply(b"k", 6, None, None), Applied::Stored);
    assert!(!e.remove_tombstone(b"k", 5), "another version");
    assert!(e.remove_tombstone(b"k", 6));
    assert_eq!(e.entry(b"k"), None);
    assert!(!e.remove_tombstone(b"k", 6), "already gone");

    // Undo puts the previous entry back, only over the write it undoes.
    put(&mut e, b"a", b"old", 10);
    let prev = e.entry(b"a");
    put(&mut e, b"a", b"refused", 12);
    e.restore(b"a", 11, None);
    assert_eq!(e.get(b"a").as_deref(), Some(&b"refused"[..]));
    e.restore(b"a", 12, prev);
    assert_eq!(e.get(b"a").as_deref(), Some(&b"old"[..]));
    assert_eq!(e.version(b"a"), 10);
    assert_eq!(e.len(), 1);
    // A key that did not exist before its refused write goes away.
    put(&mut e, b"new", b"x", 20);
    e.restore(b"new", 20, None);
    assert_eq!((e.entry(b"new"), e.len()), (None, 1));
}

#[test]
fn higher_versions_win_and_tombstones_stay() {
    let mut e = Engine::new([10, 1 << 40, u64::MAX / 2]);
    assert_eq!((e.get(b"k"), e.version(b"k")), (None, 0));
    put(&mut e, b"k", b"v1", 5);
    assert_eq!(e.apply(b"k", 4, Some(b"old"), None), Applied::Newer(5));
    assert_eq!(
        e.apply(b"k", 5, Some(b"v1"), None),
        Applied::Stored,
        "repeat"
    );
    assert_eq!(e.get(b"k").as_deref(), Some(&b"v1"[..]));
    put(&mut e, b"k", b"", 9);
    assert_eq!(e.get(b"k").as_deref(), Some(&b""[..]), "empty is a value");
    assert_eq!(e.len(), 1);
    // A delete leaves a tombstone that keeps older copies out.
    assert_eq!(e.apply(b"k", 12, None, None), Applied::Stored);
    assert!(!e.exists(b"k"));
    assert_eq!(e.len(), 0);
    assert_eq!(e.entry(b"k").unwrap().version, 12);
    assert_eq!(e.apply(b"k", 11, Some(b"zombie"), None), Applied::Newer(12));
    assert_eq!(e.get(b"k"), None);
    put(&mut e, b"k", b"back", 13);
    assert_eq!(e.len(), 1);
}

#[test]
fn conditional_writes_need_their_base() {
    let mut e = Engine::default();
    put(&mut e, b"c", b"1", 10);
    // Decided against version 10: fine while 10 is the newest held.
    assert_eq!(e.apply(b"c", 20, Some(b"2"), Some(10)), Applied::Stored);
    // Decided against 10, but 20 is here now: refused.
    assert_eq!(e.apply(b"c", 30, Some(b"2"), Some(10)), Applied::Newer(20));
    // A replica that is behind the base accepts.
    assert_eq!(e.apply(b"new", 30, Some(b"x"), Some(25)), Applied::Stored);
}

#[test]
fn keys_land_in_their_token_sector_and_survive_retokening() {
    let mut e = Engine::default();
    for i in 0..1000u32 {
        put(&mut e, format!("key{i}").as_bytes(), &i.to_be_bytes(), 1);
    }
    let tokens: Vec<u64> = (1..=16u64).map(|i| i * (u64::MAX / 16)).collect();
    e.set_tokens(tokens.clone());
    assert_eq!(e.tokens().collect::<Vec<_>>(), tokens);
    let mut total = 0;
    let mut prev = 0u64;
    for &t in &tokens {
        let s = e.sector_of_token(t).unwrap();
        for entry in s.iter() {
            let h = hash64(entry.key);
            // Token t owns (prev, t]; the first token also takes the wrap-around.
            assert!(
                h <= t && (h > prev || t == tokens[0])
                    || h > *tokens.last().unwrap() && t == tokens[0]
            );
        }
        total += s.len();
        prev = t;
    }
    assert_eq!(total, 1000);
    for i in 0..1000u32 {
        assert_eq!(
            e.get(format!("key{i}").as_bytes()).as_deref(),
            Some(&i.to_be_bytes()[..])
        );
    }
    assert_eq!(e.remove_where(|_| true), 1000);
    assert!(e.is_empty());
}

#[test]
fn varints_round_trip() {
    for n in [0u64, 1, 127, 128, 300, 16_383, 16_384, 1 << 40, u64::MAX] {
        let mut buf = Vec::new();
        put_varint(&mut buf, n);
        assert_eq!(buf.len(), varint_len(n), "{n}");
    }
    // Keys whose tagged length needs one, two and three varint bytes.
    let mut e = Engine::default();
    for len in [0usize, 1, 63, 64, 200, 8191, 8192, 65_535] {
        let key = vec![b'k'; len];
        let value = vec![len as u8; len % 7];
        put(&mut e, &key, &value, 3);
        let got = e.entry_ref(&key).unwrap();
        assert_eq!((got.key, got.version), (&key[..], 3));
        assert_eq!(got.value, Some(&value[..]));
        assert_eq!(e.apply(&key, 4, None, None), Applied::Stored);
        assert_eq!(
            e.entry(&key).unwrap(),
            Entry {
                version: 4,
                value: None
            }
        );
    }
    assert_eq!(e.len(), 0);
}

#[test]
fn edge_entries_survive_overwrites_moves_and_drops() {
    let records = ledger::live();
    let big = vec![b'b'; 16 << 10];
    let huge = vec![b'h'; (64 << 10) + 1];
    let mut e = Engine::new([1 << 60, u64::MAX / 2]);
    put(&mut e, b"", b"", 1);
    assert_eq!(
        e.get(b"").as_deref(),
        Some(&b""[..]),
        "empty key, empty value"
    );
    put(&mut e, b"", b"v", 2);
    assert_eq!(e.apply(b"", 3, None, None), Applied::Stored);
    assert_eq!(
        e.entry(b"").unwrap(),
        Entry {
            version: 3,
            value: None
        }
    );
    put(&mut e, b"", &big, 4);
    put(&mut e, b"k", &big, 1);
    put(&mut e, b"k", &huge, 2);
    put(&mut e, b"k", &huge, 3);
    assert_eq!(e.get(b"k").as_deref(), Some(&huge[..]));
    put(&mut e, b"k", b"", 4);
    assert_eq!(e.apply(b"k", 5, None, None), Applied::Stored);
    assert_eq!(e.apply(b"k", 6, None, None), Applied::Stored);
    assert_eq!(e.entry(b"k").unwrap().version, 6);
    for i in 0..200u32 {
        put(&mut e, format!("key:{i:09}").as_bytes(), &[i as u8; 100], 1);
    }
    assert_eq!((e.len(), e.bytes()), (201, big.len() + 200 * 113));
    assert_eq!(ledger::live(), records + 202);
    // Moving every key to new sectors drops the old sectors, and the records
    // with them only once.
    e.set_tokens([7, 1 << 62, u64::MAX - 3]);
    assert_eq!(ledger::live(), records + 202);
    assert_eq!(e.get(b"").as_deref(), Some(&big[..]));
    assert_eq!(e.get(b"key:000000199").as_deref(), Some(&[199u8; 100][..]));
    assert!(e.remove_tombstone(b"k", 6));
    assert_eq!(e.remove_where(|h| h % 2 == 0) + e.len(), 201);
    e.set_tokens([]);
    drop(e);
    assert_eq!(ledger::live(), records, "every record freed once");
}

#[test]
fn part_shares_grow_by_quarter_octaves() {
    let weights: Vec<f64> = (0..PARTS)
        .map(|j| (j as f64 / PARTS as f64).exp2())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut end = 0.0;
    for (j, w) in weights.iter().take(PARTS - 1).enumerate() {
        end += w / total;
        assert_eq!(PART_ENDS[j], (end * 65536.0).round() as u16, "end {j}");
    }
    // Keys spread over the parts in those shares.
    let mut counts = [0usize; PARTS];
    for i in 0..100_000u32 {
        counts[part(table_hash(hash64(&i.to_le_bytes())))] += 1;
    }
    for (c, w) in counts.iter().zip(&weights) {
        let want = 100_000.0 * w / total;
        assert!((*c as f64 - want).abs() < want * 0.05, "{counts:?}");
    }
}

#[test]
fn a_sector_just_past_a_doubling_is_not_half_empty() {
    // 15,625 keys (a million over 64 sectors) need 32,768 buckets in one
    // hashbrown table (at most 7/8 full), 48% used; split in parts that
    // double at different sizes, they need about a quarter less.
    let mut e = Engine::default();
    for i in 0..15_625u32 {
        put(&mut e, format!("key:{i:09}").as_bytes(), b"v", 1);
    }
    let one_table = 32_768 * (std::mem::size_of::<Record>() + 1);
    let bytes = e.sector_of_token(Token::MAX).unwrap().table_bytes();
    assert!(bytes * 5 <= one_table * 4, "{bytes} of {one_table}");
}

/// What the engine did before it packed entries: a map of key to entry.
#[derive(Default)]
struct Model {
    map: std::collections::HashMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
}

impl Model {
    fn apply(
        &mut self,
        k: &[u8],
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> Applied {
        let held = self.map.get(k).map_or(0, |e| e.0);
        if held == version && held != 0 {
            return Applied::Stored;
        }
        if held > version || base.is_some_and(|b| held > b) {
            return Applied::Newer(held);
        }
        self.map
            .insert(k.to_vec(), (version, value.map(<[u8]>::to_vec)));
        Applied::Stored
    }

    fn live(&self) -> usize {
        self.map.values().filter(|e| e.1.is_some()).count()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Apply(u8, u64, Option<Vec<u8>>, Option<u64>),
    Retoken(Vec<u64>),
    RemoveBelow(u64),
}

fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    // Values of random lengths, of a few fixed lengths (so overwrites of the
    // same length, in place, are frequent) and large ones.
    let bytes = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..40),
        4 => (any::<u8>(), proptest::sample::select(vec![0usize, 1, 3, 100]))
            .prop_map(|(b, n)| vec![b; n]),
        1 => (any::<u8>(), 16_384usize..16_400).prop_map(|(b, n)| vec![b; n]),
    ];
    let value = proptest::option::of(bytes);
    prop_oneof![
        20 => (any::<u8>(), 0u64..40, value, proptest::option::of(0u64..40))
            .prop_map(|(k, v, val, b)| Op::Apply(k, v, val, b)),
        1 => proptest::collection::vec(any::<u64>(), 0..6).prop_map(Op::Retoken),
        1 => any::<u64>().prop_map(Op::RemoveBelow),
    ]
}

/// Key `i` of a small set, with lengths on both sides of the one-byte varint
/// (and the empty key, which every `i` of length 0 names).
fn model_key(i: u8) -> Vec<u8> {
    let len = [0usize, 1, 5, 13, 63, 64, 130][i as usize % 7];
    let mut k = vec![b'a' + i % 26; len];
    if let Some(first) = k.first_mut() {
        *first = i;
    }
    k
}

proptest::proptest! {
    #[test]
    fn behaves_like_a_map_of_entries(ops in proptest::collection::vec(op_strategy(), 1..200)) {
        let records = ledger::live();
        let mut e = Engine::new([u64::MAX / 3, u64::MAX / 3 * 2]);
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Apply(k, v, val, base) => {
                    let k = model_key(k % 48);
                    proptest::prop_assert_eq!(
                        e.apply(&k, v, val.as_deref(), base),
                        m.apply(&k, v, val.as_deref(), base)
                    );
                }
                Op::Retoken(tokens) => e.set_tokens(tokens),
                Op::RemoveBelow(cut) => {
                    let before = m.live();
                    m.map.retain(|k, _| hash64(k) >= cut);
                    proptest::prop_assert_eq!(e.remove_where(|h| h < cut), before - m.live());
                }
            }
            proptest::prop_assert_eq!(e.len(), m.live());
        }
        for i in 0..48u8 {
            let k = model_key(i);
            let want = m.map.get(&k);
            proptest::prop_assert_eq!(e.version(&k), want.map_or(0, |w| w.0));
            proptest::prop_assert_eq!(e.exists(&k), want.is_some_and(|w| w.1.is_some()));
            proptest::prop_assert_eq!(
                e.get(&k).map(|b| b.to_vec()),
                want.and_then(|w| w.1.clone())
            );
            proptest::prop_assert_eq!(
                e.entry(&k),
                want.map(|w| Entry { version: w.0, value: w.1.clone().map(Bytes::from) })
            );
        }
        let mut keys: Vec<Vec<u8>> = e.keys_where(|_| true).into_iter().map(|k| k.to_vec()).collect();
        keys.sort();
        let mut want: Vec<Vec<u8>> = m.map.keys().cloned().collect();
        want.sort();
        proptest::prop_assert_eq!(&keys, &want);
        let held: usize = e.tokens().map(|t| e.sector_of_token(t).unwrap().len()).sum();
        proptest::prop_assert_eq!(held, m.map.len());
        proptest::prop_assert_eq!(ledger::live(), records + held, "one record per entry");
        let copy = e.clone();
        proptest::prop_assert_eq!(ledger::live(), records + 2 * held);
        drop(e);
        proptest::prop_assert_eq!(copy.len(), m.live());
        drop(copy);
        proptest::prop_assert_eq!(ledger::live(), records, "every record freed");
    }
}

#[test]
fn a_write_says_what_it_replaced_and_a_next_write_picks_above_the_held_version() {
    let mut e = Engine::default();
    let h = hash64(b"k");
    let first = e.apply_hashed(h, b"k", 5, Some(b"v"), None);
    assert_eq!(first.replaced, Some(None), "a new key replaces nothing");
    let same = e.apply_hashed(h, b"k", 5, Some(b"v"), None);
    assert_eq!(same.replaced, None, "a repeat changes nothing");
    let older = e.apply_hashed(h, b"k", 4, None, None);
    assert_eq!((older.applied, older.replaced), (Applied::Newer(5), None));
    // The version is picked from the one held, in the same look-up.
    let (v, next) = e.apply_next_hashed(h, b"k", None, |held| held + 10);
    assert_eq!((v, next.replaced), (15, Some(Some((5, true)))));
    assert_eq!(
        e.entry(b"k"),
        Some(Entry {
            version: 15,
            value: None
        })
    );
    assert_eq!(e.len(), 0, "the tombstone is no live key");
    let (v, fresh) = e.apply_next_hashed(hash64(b"new"), b"new", Some(b"x"), |held| held + 1);
    assert_eq!((v, fresh.replaced), (1, Some(None)));
}
