//! The batch ops (see docs/protocol.md, "Batches"): [`Client::mget`] and
//! [`Client::mset`] send one MGET or MSET to a node, which serves each key as
//! its own request and answers once with one result per key, in order. A key
//! that failed is reported with its error while the others succeed; an error of
//! the whole batch (a bad key, more than [`batch::MAX_KEYS`] keys, a reply over
//! [`batch::MAX_REPLY`] bytes: `ERR BADKEY` or `ERR LIMIT`, nothing applied) is
//! the call's error.
//!
//! A partition-aware client sends the batch to any node that is up: its keys
//! live on many nodes, and the node routes each one.

use super::{expect, Client, ClientError, Result, Route};
use crate::protocol::batch::{self, KeyResult};
use crate::protocol::{op, Error, ErrorCode};
use bytes::Bytes;

impl Client {
    /// Sends one batch request and reads its results, one per key.
    fn batch_call(&mut self, o: u8, payload: &[u8], keys: usize) -> Result<Vec<KeyResult>> {
        let id = self.client_id;
        let f = match &mut self.route {
            Route::Contact(c) => c.call(o, id, &[payload])?,
            Route::Ring(r) => {
                let target = r.any_up(0).ok_or_else(|| {
                    ClientError::Server(Error::new(ErrorCode::Unavailable, "no node is up"))
                })?;
                r.conn(target)?.call(o, id, &[payload])?
            }
        };
        expect(&f, &[op::VALUE])?;
        let results = batch::decode_results(&f.payload)
            .map_err(|e| ClientError::Protocol(format!("malformed batch reply: {e}")))?;
        if results.len() != keys {
            return Err(ClientError::Protocol(format!(
                "a batch of {keys} keys got {} results",
                results.len()
            )));
        }
        Ok(results)
    }

    /// Reads `keys` with one MGET: per key, its value, `None` if absent, or the
    /// error its read got.
    pub fn mget<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<Vec<std::result::Result<Option<Bytes>, Error>>> {
        let payload = batch::encode_keys(keys);
        let results = self.batch_call(op::MGET, &payload, keys.len())?;
        let each = |r: KeyResult| match r.op {
            op::VALUE => Ok(Some(r.payload)),
            op::NOT_FOUND => Ok(None),
            op::ERR => Err(Error::from_payload(&r.payload)),
            o => Err(unexpected(o)),
        };
        Ok(results.into_iter().map(each).collect())
    }

    /// Writes `pairs` with one MSET: per pair, `Ok` once its write quorum
    /// acknowledged it, or the error its write got (`UNKNOWN`: it may have
    /// been applied). Not atomic: each key is its own write.
    pub fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        pairs: &[(K, V)],
    ) -> Result<Vec<std::result::Result<(), Error>>> {
        let payload = batch::encode_pairs(pairs);
        let results = self.batch_call(op::MSET, &payload, pairs.len())?;
        let each = |r: KeyResult| match r.op {
            op::OK => Ok(()),
            op::ERR => Err(Error::from_payload(&r.payload)),
            o => Err(unexpected(o)),
        };
        Ok(results.into_iter().map(each).collect())
    }
}

/// A result op the request cannot get.
fn unexpected(o: u8) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("unexpected {} result", op::name(o)),
    )
}
