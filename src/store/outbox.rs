//! Outbox: deliveries created for a published event, in the same transaction.

use rusqlite::Connection;

use super::StoreError;
use crate::events::Event;

/// Create the deliveries of `event` (one per matching enabled target). Webhook policies come
/// with the dispatcher; until then nothing matches.
pub fn fanout(_conn: &Connection, _event: &Event) -> Result<(), StoreError> {
    Ok(())
}
