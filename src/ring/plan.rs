//! Token assignment: where a joining node places its tokens ([`plan_tokens`]) and who
//! takes over a leaving node's tokens ([`plan_handoff`]).
//!
//! The manager gives a joining node its tokens with [`plan_tokens`]. On an empty ring
//! the first node gets `count` evenly spaced tokens, rotated by a seed (the hash of
//! its address), so two clusters do not share token positions. Afterwards a joining
//! node cuts its tokens out of the others' ranges, in exact integer arithmetic:
//!
//! 1. *How much.* Compute the exact number of hashes each node owns. Lower the
//!    largest owners, and raise the newcomer, to one common level (water-filling).
//!    Normally that level is the fair share `1/(nodes)` and every node gives exactly
//!    its excess; if some nodes sit below the fair share (say, after a removal), the
//!    level is higher and only the nodes above it give. At most `count` nodes give,
//!    since a token takes from one node.
//! 2. *How many tokens from whom.* A giver with `k` tokens cuts its `k` largest
//!    ranges, each by the same fraction `give / (their total size)`. Tokens are dealt
//!    one at a time to the giver whose fraction is then the highest. This minimises
//!    the largest fraction cut from any range: no range is eaten whole while another
//!    barely shrinks, and a giver whose ranges are small (a recent joiner) gets the
//!    extra tokens it needs.
//! 3. *Where.* For a cut range `(prev, token]`, the new token goes at `prev + piece`:
//!    the newcomer owns `(prev, new]`, the giver keeps `(new, token]`.
//!
//! Tokens left over (a giver has fewer ranges than tokens, or nothing needs to move)
//! split the newcomer's own largest range in half, which changes no one's share.
//!
//! Growing from 1 to 16 nodes with 64 tokens each, every node owns exactly the fair
//! share after every join (to the hash), and range lengths stay between about 0.4 and
//! 2.2 times the mean. Because tokens are only ever added, a join moves only the keys
//! the newcomer takes (tested as a property). Because the newcomer takes the *start*
//! of ranges, each of its ranges is followed by the token of the node it came from:
//! if it leaves soon after, its keys go back to exactly where they came from.
//!
//! When a node leaves for good, dropping its tokens ([`super::Ring::remove_node`]) gives each
//! of its ranges to the next token clockwise, which can leave a node with 20% more
//! than its share. [`plan_handoff`] keeps the leaving node's token positions and
//! hands each one, largest range first, to the node owning least at that moment
//! (within half a percent of fair with 64 tokens on 16 nodes). Either way only the
//! leaving node's keys move. Handing tokens over raises the others' token counts, so
//! later joiners should get as many as the average node holds
//! ([`join_token_count`]); with that, every join restores an exact balance.

use super::{owned_by, range_len, Token, HASH_SPACE};

/// Chooses `count` new tokens for a node joining a ring whose existing tokens are
/// `existing` (token, owner id) pairs, so that afterwards every node (the newcomer
/// included) owns close to 1/(nodes) of the hash space. Deterministic for the same
/// inputs; the result is sorted and never repeats a token or reuses an existing one.
///
/// If `existing` is empty: `count` evenly spaced tokens, offset by `seed` (e.g.
/// `hash64` of the address); otherwise `seed` is unused. If `new_node` already holds
/// tokens in `existing`, they count towards its share. Fewer than `count` tokens come
/// back only if the ring has no unused position left. Choose `count` with
/// [`join_token_count`]: with fewer tokens than there are nodes, or than the others
/// hold on average, the newcomer may end below its share.
pub fn plan_tokens(
    existing: &[(Token, u32)],
    new_node: u32,
    count: usize,
    seed: u64,
) -> Vec<Token> {
    if count == 0 {
        return Vec::new();
    }
    let mut points = normalized(existing);
    if points.is_empty() {
        // count <= 2^64 - 1, so step >= 1 and i * step < 2^64 for every i < count.
        let step = HASH_SPACE / count as u128;
        let mut tokens: Vec<Token> = (0..count as u128)
            .map(|i| seed.wrapping_add((i * step) as u64))
            .collect();
        tokens.sort_unstable();
        return tokens;
    }

    let gives = water_fill(&points, new_node, count);
    let ranges: Vec<Vec<(u128, Token)>> = gives
        .iter()
        .map(|&(donor, _)| splittable_ranges(&points, donor))
        .collect();
    let shares = allot(&gives, &ranges, count);
    let mut out: Vec<Token> = Vec::with_capacity(count);
    for ((&(_, give), ranges), tokens) in gives.iter().zip(&ranges).zip(shares) {
        // Cut the same fraction out of each of the donor's `tokens` largest ranges.
        let chosen = &ranges[..tokens];
        let room: u128 = chosen.iter().map(|r| r.0).sum();
        let give = give.min(room);
        for &(cap, end) in chosen {
            // give <= 2^63 (the newcomer gets at most half the ring) and cap < 2^64:
            // the product fits.
            let take = (give * cap / room).clamp(1, cap);
            out.push(place(&mut points, end, take, new_node));
        }
    }
    // Tokens the donors could not take (no need left, or no room in their ranges):
    // split one of the newcomer's own ranges in half, which leaves every share as it
    // is; if the newcomer has none, halve the largest range on the ring.
    while out.len() < count {
        let splittable = |points: &[(Token, u32)], i: usize| range_len(points, i) >= 2;
        let i = largest_range(&points, |id| id == new_node)
            .filter(|&i| splittable(&points, i))
            .or_else(|| largest_range(&points, |_| true).filter(|&i| splittable(&points, i)));
        let Some(i) = i else {
            break;
        };
        let take = range_len(&points, i) / 2;
        let end = points[i].0;
        out.push(place(&mut points, end, take, new_node));
    }
    out.sort_unstable();
    out
}

/// How many tokens a joining node should get: `minimum` (the configured tokens per
/// node), or the average number the existing nodes hold if that is larger. Nodes
/// gain tokens through [`plan_handoff`], so ranges get smaller on average; a newcomer
/// with fewer tokens than its peers would need pieces larger than the ranges it can
/// cut, and would end below its share.
pub fn join_token_count(existing: &[(Token, u32)], minimum: usize) -> usize {
    let mut owners: Vec<u32> = existing.iter().map(|p| p.1).collect();
    owners.sort_unstable();
    owners.dedup();
    if owners.is_empty() {
        return minimum;
    }
    minimum.max(existing.len().div_ceil(owners.len()))
}

/// Chooses a new owner for each token of `leaving`, among the other nodes holding
/// tokens in `existing`, so that the leaving node's share is spread evenly: the
/// largest range first, each to the node owning least at that moment (ties to the
/// lower id). Returns (token, new owner) sorted by token; empty if no other node holds
/// tokens. Token positions do not change, so only the leaving node's keys move.
pub fn plan_handoff(existing: &[(Token, u32)], leaving: u32) -> Vec<(Token, u32)> {
    let points = normalized(existing);
    let mut load: Vec<(u32, u128)> = owned_by(&points)
        .into_iter()
        .filter(|o| o.0 != leaving)
        .collect();
    if load.is_empty() {
        return Vec::new();
    }
    let mut ranges: Vec<(u128, Token)> = (0..points.len())
        .filter(|&i| points[i].1 == leaving)
        .map(|i| (range_len(&points, i), points[i].0))
        .collect();
    ranges.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut out: Vec<(Token, u32)> = Vec::with_capacity(ranges.len());
    for (len, token) in ranges {
        // `load` is sorted by id, so min_by_key picks the lowest id among equals.
        if let Some(least) = load.iter_mut().min_by_key(|o| o.1) {
            least.1 += len;
            out.push((token, least.0));
        }
    }
    out.sort_unstable();
    out
}

/// The points sorted by token, a token claimed twice kept for the lower id (the rule
/// of `Ring::new`).
fn normalized(existing: &[(Token, u32)]) -> Vec<(Token, u32)> {
    let mut points = existing.to_vec();
    points.sort_unstable();
    points.dedup_by_key(|p| p.0);
    points
}

/// How much each existing node gives the newcomer, as (id, hashes) sorted by id, with
/// only positive amounts. Water-filling: the largest owners are lowered, and the
/// newcomer raised, to one common level; the level is the fair share 1/(nodes) when
/// every existing node owns at least that, and higher when some own less (they can
/// only gain when nodes leave). This minimises the largest share afterwards.
///
/// At most `max_donors` nodes give (a token takes from one node only), the largest
/// owners; if that stops the level from reaching the next node's share, the newcomer
/// ends below the others and the next largest owner keeps the largest share.
fn water_fill(points: &[(Token, u32)], new_node: u32, max_donors: usize) -> Vec<(u32, u128)> {
    let owned = owned_by(points);
    let have = owned.iter().find(|o| o.0 == new_node).map_or(0, |o| o.1);
    let mut others: Vec<(u32, u128)> = owned.into_iter().filter(|o| o.0 != new_node).collect();
    others.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    match others.first() {
        Some(top) if top.1 > have => {}
        _ => return Vec::new(),
    }
    // Lowering the k largest and raising the newcomer to one level L means
    // L = (their shares + the newcomer's) / (k + 1): take the smallest k for which L
    // is at least the next node's share. Rounding up keeps the newcomer at or below L.
    let mut sum = have;
    let mut level: u128 = 0;
    let mut lowered = others.len();
    for k in 0..others.len() {
        sum += others[k].1;
        let l = sum.div_ceil(k as u128 + 2);
        if l >= others.get(k + 1).map_or(0, |o| o.1) || k + 1 >= max_donors {
            level = l;
            lowered = k + 1;
            break;
        }
    }
    let mut gives: Vec<(u32, u128)> = others[..lowered]
        .iter()
        .filter(|o| o.1 > level)
        .map(|o| (o.0, o.1 - level))
        .collect();
    gives.sort_unstable();
    gives
}

/// A donor's ranges that can be cut (two hashes or more), as (room, end token) with
/// room = length - 1 (the donor keeps at least its token's own hash), largest first.
fn splittable_ranges(points: &[(Token, u32)], donor: u32) -> Vec<(u128, Token)> {
    let mut ranges: Vec<(u128, Token)> = (0..points.len())
        .filter(|&i| points[i].1 == donor)
        .map(|i| (range_len(points, i) - 1, points[i].0))
        .filter(|r| r.0 > 0)
        .collect();
    ranges.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges
}

/// Splits up to `count` tokens over the donors. A donor with `k` tokens cuts its `k`
/// largest ranges, each by the fraction give / (room of those ranges); each token
/// goes to the donor whose fraction is highest at that moment (ties to the larger
/// give, then the lower id). This minimises the largest fraction cut from any range,
/// so no range is eaten whole while another barely shrinks, and a donor whose ranges
/// are small gets the tokens it needs to give its full amount. A donor gets no more
/// tokens than it has ranges.
fn allot(gives: &[(u32, u128)], ranges: &[Vec<(u128, Token)>], count: usize) -> Vec<usize> {
    let mut tokens = vec![0usize; gives.len()];
    let mut room = vec![0u128; gives.len()];
    for _ in 0..count {
        let mut best: Option<usize> = None;
        for d in 0..gives.len() {
            if gives[d].1 == 0 || tokens[d] >= ranges[d].len() {
                continue;
            }
            let better = match best {
                None => true,
                // give_d / room_d > give_b / room_b, with room 0 as infinity; give
                // <= 2^63 (the newcomer gets at most half the ring) and room <= 2^64,
                // so the products fit.
                Some(b) => {
                    let (lhs, rhs) = (gives[d].1 * room[b], gives[b].1 * room[d]);
                    lhs > rhs || (lhs == rhs && gives[d].1 > gives[b].1)
                }
            };
            if better {
                best = Some(d);
            }
        }
        let Some(d) = best else {
            break;
        };
        room[d] += ranges[d][tokens[d]].0;
        tokens[d] += 1;
    }
    tokens
}

/// Index of the largest range whose owner satisfies `pred` (the first one among
/// equals).
fn largest_range(points: &[(Token, u32)], pred: impl Fn(u32) -> bool) -> Option<usize> {
    let mut best: Option<(usize, u128)> = None;
    for (i, p) in points.iter().enumerate() {
        if !pred(p.1) {
            continue;
        }
        let len = range_len(points, i);
        if best.is_none_or(|b| len > b.1) {
            best = Some((i, len));
        }
    }
    best.map(|b| b.0)
}

/// Cuts the range ending at token `end` in two: `owner` gets its first `take` hashes
/// through a new token, `end` keeps the rest. Needs `end` in `points` and
/// `1 <= take < length of the range`. Returns the new token.
fn place(points: &mut Vec<(Token, u32)>, end: Token, take: u128, owner: u32) -> Token {
    let i = points.partition_point(|p| p.0 < end);
    let prev = if i == 0 { points.len() - 1 } else { i - 1 };
    let token = points[prev].0.wrapping_add(take as u64);
    let at = points.partition_point(|p| p.0 < token);
    points.insert(at, (token, owner));
    token
}

#[cfg(test)]
mod tests {
    use super::super::tests::arb_points;
    use super::super::{hash64, NodeEntry, NodeState, Ring};
    use super::*;
    use proptest::prelude::*;

    /// Adds node `id` with `count` planned tokens.
    fn join(ring: &mut Ring, id: u32, count: usize) {
        let addr = format!("10.0.{}.{}:7000", id / 256, id % 256);
        let tokens = plan_tokens(ring.points(), id, count, hash64(addr.as_bytes()));
        assert_eq!(tokens.len(), count);
        ring.upsert_node(NodeEntry {
            id,
            addr,
            state: NodeState::Up,
            tokens,
        });
        ring.epoch += 1;
    }

    /// Largest share over the mean share, and smallest over the mean.
    fn spread(ring: &Ring) -> (f64, f64) {
        let shares = ring.ownership();
        let mean = 1.0 / shares.len() as f64;
        let max = shares.iter().map(|s| s.1).fold(0.0, f64::max);
        let min = shares.iter().map(|s| s.1).fold(1.0, f64::min);
        (max / mean, min / mean)
    }

    #[test]
    fn empty_ring_gets_evenly_spaced_tokens() {
        assert!(plan_tokens(&[], 1, 0, 5).is_empty());
        assert_eq!(plan_tokens(&[], 1, 1, 5), vec![5]);
        assert_eq!(plan_tokens(&[], 1, 2, 5), vec![5, 5 + (1 << 63)]);
        let step = 1u64 << 62;
        assert_eq!(
            plan_tokens(&[], 1, 4, u64::MAX),
            vec![step - 1, 2 * step - 1, 3 * step - 1, u64::MAX]
        );
        let tokens = plan_tokens(&[], 1, 64, 12345);
        let mut ring = Ring::empty();
        ring.upsert_node(NodeEntry {
            id: 1,
            addr: "h:1".to_string(),
            state: NodeState::Up,
            tokens: tokens.clone(),
        });
        assert_eq!(ring.node(1).unwrap().tokens.len(), 64);
        for &t in &tokens {
            let (start, end) = ring.range_of(t).unwrap();
            assert_eq!(end.wrapping_sub(start), 1 << 58, "token {t}");
        }
        assert_ne!(plan_tokens(&[], 1, 64, 1), plan_tokens(&[], 1, 64, 2));
    }

    #[test]
    fn second_node_halves_every_range() {
        let first = plan_tokens(&[], 1, 8, 0);
        let existing: Vec<(Token, u32)> = first.iter().map(|&t| (t, 1)).collect();
        let second = plan_tokens(&existing, 2, 8, 0);
        let want: Vec<Token> = first
            .iter()
            .map(|&t| t.wrapping_sub(1 << 61).wrapping_add(1 << 60))
            .collect();
        let mut want = want;
        want.sort_unstable();
        assert_eq!(second, want);
    }

    #[test]
    fn balanced_growth_to_sixteen_nodes() {
        let mut ring = Ring::empty();
        let mut worst = 1.0f64;
        for id in 1..=16 {
            join(&mut ring, id, 64);
            let (max, min) = spread(&ring);
            eprintln!("{id:2} nodes: max/mean {max:.9} min/mean {min:.9}");
            worst = worst.max(max);
            assert!(max <= 1.000_001, "{id} nodes: max/mean {max}");
            assert!(min >= 0.999_999, "{id} nodes: min/mean {min}");
        }
        eprintln!("worst max/mean over 1..=16 nodes: {worst:.6}");
        // Range sizes stay within a sensible spread (no range swallowed whole).
        let lens: Vec<u128> = (0..ring.points().len())
            .map(|i| range_len(ring.points(), i))
            .collect();
        let mean = HASH_SPACE / lens.len() as u128;
        let largest = *lens.iter().max().unwrap();
        eprintln!(
            "ranges: {} of mean {:.3e}, largest/mean {:.2}, smallest/mean {:.2e}",
            lens.len(),
            mean as f64,
            largest as f64 / mean as f64,
            *lens.iter().min().unwrap() as f64 / mean as f64
        );
        assert!(largest <= 4 * mean);
        assert!(*lens.iter().min().unwrap() >= mean / 10);
    }

    #[test]
    fn keys_spread_evenly_over_eight_nodes() {
        let mut ring = Ring::empty();
        for id in 1..=8 {
            join(&mut ring, id, 64);
        }
        let mut counts = [0u32; 9];
        for i in 0..100_000 {
            let owner = ring.owner(format!("key{i}").as_bytes()).unwrap();
            counts[owner as usize] += 1;
        }
        let max = *counts[1..].iter().max().unwrap();
        let min = *counts[1..].iter().min().unwrap();
        let ratio = f64::from(max) / (100_000.0 / 8.0);
        eprintln!("keys per node: {:?}, max/mean {ratio:.4}", &counts[1..]);
        assert!(ratio <= 1.02, "max/mean {ratio}");
        assert!(f64::from(min) / (100_000.0 / 8.0) >= 0.98);
    }

    #[test]
    fn growth_from_an_unbalanced_ring() {
        // Node 1 owns 3/4, node 2 owns 1/4: only node 1 gives to node 3, down to 3/8
        // each for nodes 1 and 3 (the water level), since node 2 is below 1/3.
        let existing = [(1u64 << 62, 2), (0, 1)];
        let tokens = plan_tokens(&existing, 3, 4, 0);
        let mut points = existing.to_vec();
        points.extend(tokens.iter().map(|&t| (t, 3)));
        let ring = Ring::new(
            1,
            1,
            1,
            1,
            [1, 2, 3]
                .into_iter()
                .map(|id| NodeEntry {
                    id,
                    addr: "h:1".to_string(),
                    state: NodeState::Up,
                    tokens: points.iter().filter(|p| p.1 == id).map(|p| p.0).collect(),
                })
                .collect(),
        );
        let shares = ring.ownership();
        assert_eq!(shares[1], (2, 0.25));
        assert!((shares[0].1 - 0.375).abs() < 1e-9, "{shares:?}");
        assert!((shares[2].1 - 0.375).abs() < 1e-9, "{shares:?}");
    }

    #[test]
    fn handoff_keeps_the_balance() {
        let mut ring = Ring::empty();
        for id in 1..=16 {
            join(&mut ring, id, 64);
        }
        let mut worst_drop = 1.0f64;
        let mut worst_handoff = 1.0f64;
        for leaving in [1, 2, 7, 15] {
            let mut dropped = ring.clone();
            dropped.remove_node(leaving);
            worst_drop = worst_drop.max(spread(&dropped).0);

            let moves = plan_handoff(ring.points(), leaving);
            assert_eq!(moves.len(), 64);
            let mut handed = ring.clone();
            leave(&mut handed, leaving);
            let moved: Vec<Token> = moves.iter().map(|m| m.0).collect();
            assert_eq!(moved, ring.node(leaving).unwrap().tokens);
            let (max, min) = spread(&handed);
            worst_handoff = worst_handoff.max(max);
            assert!(max <= 1.02 && min >= 0.98, "without {leaving}: {max} {min}");
            for i in 0..3000u64 {
                let h = hash64(&i.to_le_bytes());
                let before = ring.owner_of_hash(h).unwrap();
                let after = handed.owner_of_hash(h).unwrap();
                assert!(before == after || before == leaving);
                assert_eq!(handed.token_for(h), ring.token_for(h));
            }
        }
        eprintln!(
            "after one of 16 leaves, max/mean: dropping tokens {worst_drop:.4}, handoff {worst_handoff:.4}"
        );
        assert!(plan_handoff(&[(5, 1)], 1).is_empty());
        assert!(plan_handoff(&[], 1).is_empty());
    }

    /// Node `leaving` goes away, its tokens handed over with plan_handoff.
    fn leave(ring: &mut Ring, leaving: u32) {
        let moves = plan_handoff(ring.points(), leaving);
        ring.remove_node(leaving);
        for n in ring.nodes().to_vec() {
            let mut n = n;
            n.tokens
                .extend(moves.iter().filter(|m| m.1 == n.id).map(|m| m.0));
            ring.upsert_node(n);
        }
        ring.epoch += 1;
    }

    #[test]
    fn churn_stays_balanced() {
        let mut ring = Ring::empty();
        for id in 1..=16 {
            join(&mut ring, id, 64);
        }
        let (mut worst_leave, mut worst_join) = (1.0f64, 1.0f64);
        for round in 0..24u32 {
            let ids: Vec<u32> = ring.nodes().iter().map(|n| n.id).collect();
            let victim = ids[(hash64(&round.to_le_bytes()) % ids.len() as u64) as usize];
            leave(&mut ring, victim);
            worst_leave = worst_leave.max(spread(&ring).0);
            let count = join_token_count(ring.points(), 64);
            assert!(count >= 64);
            join(&mut ring, 100 + round, count);
            let (max, min) = spread(&ring);
            worst_join = worst_join.max(max);
            assert!(
                max <= 1.000_001 && min >= 0.999_999,
                "round {round}: {max} {min}"
            );
        }
        eprintln!("churn: max/mean after a leave {worst_leave:.4}, after a join {worst_join:.6}");
        assert!(worst_leave <= 1.02);
        assert_eq!(join_token_count(&[], 64), 64);
        assert_eq!(join_token_count(&[(1, 1), (2, 1), (3, 2)], 1), 2);
        assert_eq!(join_token_count(&[(1, 1), (2, 1), (3, 2)], 5), 5);
    }

    /// A splitmix64 stream: random keys from one seed.
    fn keys(seed: u64, n: usize) -> Vec<[u8; 8]> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)).to_le_bytes()
            })
            .collect()
    }

    /// A ring grown with plan_tokens, node ids from `ids`, `count` tokens each.
    fn grown(ids: &[u32], count: usize) -> Ring {
        let mut ring = Ring::new(1, 3, 2, 2, Vec::new());
        for &id in ids {
            join(&mut ring, id, count);
        }
        ring
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn adding_a_node_moves_only_keys_to_it(
            ids in prop::collection::btree_set(1u32..1000, 0..8),
            new_id in 1000u32..2000,
            count in 1usize..40,
            seed in any::<u64>(),
        ) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let before = grown(&ids, count);
            let mut after = before.clone();
            join(&mut after, new_id, count);
            let mut moved = 0;
            for key in keys(seed, 3000) {
                let (old, new) = (before.owner(&key), after.owner(&key));
                if old != new {
                    prop_assert_eq!(new, Some(new_id));
                    moved += 1;
                }
            }
            // With a token for every donor, the newcomer takes its fair share of the
            // hash space, so about that share of the keys (3000 keys: within 30% is
            // more than five standard deviations).
            let share = 3000.0 / (ids.len() + 1) as f64;
            prop_assert!(count < ids.len()
                || (f64::from(moved) > share * 0.7 && f64::from(moved) < share * 1.3),
                "moved {} of 3000 keys to node {} of {}", moved, new_id, ids.len() + 1);
        }

        #[test]
        fn removing_a_node_moves_only_its_keys(
            ids in prop::collection::btree_set(1u32..1000, 2..9),
            pick in any::<prop::sample::Index>(),
            count in 1usize..40,
            seed in any::<u64>(),
        ) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let gone = *pick.get(&ids);
            let before = grown(&ids, count);
            let mut after = before.clone();
            after.remove_node(gone);
            for key in keys(seed, 3000) {
                let (old, new) = (before.owner(&key), after.owner(&key));
                if old != new {
                    prop_assert_eq!(old, Some(gone));
                }
                prop_assert_ne!(new, Some(gone));
            }
        }

        #[test]
        fn planned_tokens_are_new_and_distinct(
            existing in arb_points(),
            new_node in 1u32..60,
            count in 0usize..100,
            seed in any::<u64>(),
        ) {
            let tokens = plan_tokens(&existing, new_node, count, seed);
            prop_assert_eq!(tokens.len(), count);
            prop_assert!(tokens.windows(2).all(|w| w[0] < w[1]), "not sorted and distinct");
            for t in &tokens {
                prop_assert!(!existing.iter().any(|p| p.0 == *t), "token {} reused", t);
            }
            prop_assert_eq!(&plan_tokens(&existing, new_node, count, seed), &tokens);
        }

        #[test]
        fn planned_tokens_work_on_tiny_rings(
            existing in prop::collection::btree_map(any::<u64>(), 1u32..4, 1..4),
            count in 1usize..300,
        ) {
            // Few large ranges, many tokens: most land in one range.
            let existing: Vec<(Token, u32)> = existing.into_iter().collect();
            let tokens = plan_tokens(&existing, 9, count, 0);
            prop_assert_eq!(tokens.len(), count);
            prop_assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn crowded_ring_still_gets_distinct_tokens() {
        // Adjacent tokens leave ranges of one hash that cannot be split.
        let existing: Vec<(Token, u32)> = (0..10u64).map(|t| (t, (t % 2) as u32)).collect();
        let tokens = plan_tokens(&existing, 7, 50, 0);
        assert_eq!(tokens.len(), 50);
        assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        assert!(tokens.iter().all(|t| *t >= 10));
    }
}
