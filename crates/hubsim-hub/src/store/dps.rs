//! The local DPS's part of the database: its settings (the ID scope), individual enrollments, enrollment groups
//! and registration records, each a table of JSON records keyed by id (registration ids in their lowercase form,
//! [`crate::hub::dps::registration_key`]). The tables are created when the database opens ([`open`]).
//!
//! Changes go through [`Store::write`] (the service API's writes and the device's registration), so a change
//! never sees half of another. Reads that change nothing run on a read transaction ([`Store::dps_read`],
//! [`DpsView`]) on the blocking pool: a DPS CONNECT, which needs no credential to send (the ID scope is public),
//! reads the enrollments there and never takes the single writer's time, and a status poll likewise.
//!
//! **Unreadable records.** A record that does not decode (one stored by an older hubsim before peer JSON was
//! bounded, [`crate::model::MAX_STORED_JSON_DEPTH`]) is skipped by every list with a logged warning, so it
//! cannot fail listing, deleting or working with the other records; it can still be deleted by id
//! ([`Tx::remove_dps`]), and the few fields a deletion needs ([`RecordHead`]) are read even from such a record
//! (serde_json skips the fields a struct does not name without a depth limit).

use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError, TableHandle, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{db, from_bytes, to_bytes, Store, StoreError, Tx, Undo};
use crate::hub::dps::{EnrollmentGroup, IndividualEnrollment, RegistrationRecord};

type DpsTable = TableDefinition<'static, &'static str, &'static [u8]>;

const SETTINGS: DpsTable = TableDefinition::new("dps.settings");
/// Individual enrollments, by lowercase registration id.
const ENROLLMENTS: DpsTable = TableDefinition::new("dps.enrollments");
/// Enrollment groups, by group id (case-sensitive, as DPS's).
const GROUPS: DpsTable = TableDefinition::new("dps.groups");
/// Registration records, by lowercase registration id.
const REGISTRATIONS: DpsTable = TableDefinition::new("dps.registrations");

/// The fields of a stored enrollment or registration that deleting it needs, read even from a record whose
/// other fields cannot be (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordHead {
    #[serde(default)]
    pub etag: Option<String>,
    /// A registration's enrollment group (absent for an individual enrollment's).
    #[serde(default)]
    pub enrollment_group_id: Option<String>,
    #[serde(default)]
    pub last_updated_date_time_utc: Option<String>,
}

impl RecordHead {
    /// The head of a stored record; an empty head (and a warning) when even that does not decode.
    fn of(table: DpsTable, key: &str, bytes: &[u8]) -> RecordHead {
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            tracing::warn!("the stored DPS record '{key}' in {} is not JSON: {e}", table.name());
            RecordHead::default()
        })
    }
}

/// The setting that says [`open`] has moved the records to lowercase keys.
const IDS_LOWERCASE: &str = "registrationIdsLowercase";

/// Creates the DPS tables (so read transactions find them) and, once per database, moves records stored under a
/// registration id with capital letters (hubsim before registration ids were case-insensitive) to the lowercase
/// key. Of records whose ids differ only in case, the one updated last is kept; the others are dropped with a
/// warning (they are the duplicates that case-sensitive ids made). Runs in the opening transaction.
pub(super) fn open(tx: &WriteTransaction) -> Result<(), StoreError> {
    for table in [SETTINGS, ENROLLMENTS, GROUPS, REGISTRATIONS] {
        tx.open_table(table).map_err(db)?;
    }
    if tx.open_table(SETTINGS).map_err(db)?.get(IDS_LOWERCASE).map_err(db)?.is_some() {
        return Ok(());
    }
    lowercase_keys::<IndividualEnrollment>(tx, ENROLLMENTS, |e, id| e.registration_id = id)?;
    lowercase_keys::<RegistrationRecord>(tx, REGISTRATIONS, |r, id| r.registration_id = id)?;
    tx.open_table(SETTINGS).map_err(db)?.insert(IDS_LOWERCASE, b"true".as_slice()).map_err(db)?;
    Ok(())
}

fn lowercase_keys<T: DeserializeOwned + serde::Serialize>(
    tx: &WriteTransaction,
    table: DpsTable,
    set_id: impl Fn(&mut T, String),
) -> Result<(), StoreError> {
    let mut t = tx.open_table(table).map_err(db)?;
    let mut moves = Vec::new();
    for e in t.iter().map_err(db)? {
        let (k, v) = e.map_err(db)?;
        if k.value().bytes().any(|b| b.is_ascii_uppercase()) {
            moves.push((k.value().to_owned(), v.value().to_vec()));
        }
    }
    for (old_key, bytes) in moves {
        let key = old_key.to_ascii_lowercase();
        let head = RecordHead::of(table, &old_key, &bytes);
        let existing = t.get(key.as_str()).map_err(db)?.map(|g| RecordHead::of(table, &key, g.value()));
        t.remove(old_key.as_str()).map_err(db)?;
        if existing.is_some_and(|e| e.last_updated_date_time_utc >= head.last_updated_date_time_utc) {
            tracing::warn!(
                "dropped the DPS record '{old_key}' in {}: '{key}' is the same id, updated later",
                table.name()
            );
            continue;
        }
        // The record's own id becomes the lowercase one too; a record that does not decode moves as it is.
        let bytes = match serde_json::from_slice::<T>(&bytes) {
            Ok(mut r) => {
                set_id(&mut r, key.clone());
                to_bytes(&r)?
            }
            Err(_) => bytes,
        };
        t.insert(key.as_str(), bytes.as_slice()).map_err(db)?;
        tracing::info!(
            "moved the DPS record '{old_key}' in {} to '{key}' (registration ids are case-insensitive)",
            table.name()
        );
    }
    Ok(())
}

/// Every record of a table that decodes; the others are skipped with a warning (see the module docs).
fn all_readable<T: DeserializeOwned>(
    table: DpsTable,
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for e in t.iter().map_err(db)? {
        let (k, v) = e.map_err(db)?;
        match from_bytes(v.value()) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!("skipped the DPS record '{}' in {}: {e}", k.value(), table.name()),
        }
    }
    Ok(out)
}

fn one<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    t.get(key).map_err(db)?.map(|v| from_bytes(v.value())).transpose()
}

impl Tx<'_> {
    /// The ID scope, once generated.
    pub fn dps_id_scope(&mut self) -> Result<Option<String>, StoreError> {
        self.get(SETTINGS, "idScope")
    }
    pub fn put_dps_id_scope(&mut self, scope: &str) -> Result<(), StoreError> {
        self.put(SETTINGS, "idScope", &scope)
    }

    /// Deletes the record `key` of a DPS table without reading it (so an unreadable record can be deleted);
    /// whether there was one.
    fn remove_dps(&mut self, table: DpsTable, key: &str) -> Result<bool, StoreError> {
        let mut t = self.tx.open_table(table).map_err(db)?;
        let old = t.remove(key).map_err(db)?.map(|g| g.value().to_vec());
        let existed = old.is_some();
        if existed {
            self.undo.push(Undo::Str(table, key.to_owned(), old));
        }
        Ok(existed)
    }

    /// The [`RecordHead`] of the record `key`, if there is one (read even when the record cannot be).
    fn dps_head(&mut self, table: DpsTable, key: &str) -> Result<Option<RecordHead>, StoreError> {
        let t = self.tx.open_table(table).map_err(db)?;
        let v = t.get(key).map_err(db)?;
        Ok(v.map(|v| RecordHead::of(table, key, v.value())))
    }

    /// Every registration's key and [`RecordHead`], unreadable records included.
    pub fn registration_heads(&mut self) -> Result<Vec<(String, RecordHead)>, StoreError> {
        let t = self.tx.open_table(REGISTRATIONS).map_err(db)?;
        let mut out = Vec::new();
        for e in t.iter().map_err(db)? {
            let (k, v) = e.map_err(db)?;
            out.push((k.value().to_owned(), RecordHead::of(REGISTRATIONS, k.value(), v.value())));
        }
        Ok(out)
    }

    /// How many enrollment groups there are.
    pub fn enrollment_group_count(&mut self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        self.tx.open_table(GROUPS).map_err(db)?.len().map_err(db)
    }

    /// The [`RecordHead`] of the individual enrollment of a registration id's key, if there is one.
    pub fn enrollment_head(&mut self, key: &str) -> Result<Option<RecordHead>, StoreError> {
        self.dps_head(ENROLLMENTS, key)
    }
    /// Deletes the individual enrollment of a registration id's key without reading it; whether there was one.
    pub fn remove_enrollment(&mut self, key: &str) -> Result<bool, StoreError> {
        self.remove_dps(ENROLLMENTS, key)
    }
    /// The [`RecordHead`] of an enrollment group, if there is one.
    pub fn enrollment_group_head(&mut self, id: &str) -> Result<Option<RecordHead>, StoreError> {
        self.dps_head(GROUPS, id)
    }
    /// Deletes an enrollment group without reading it; whether there was one.
    pub fn remove_enrollment_group(&mut self, id: &str) -> Result<bool, StoreError> {
        self.remove_dps(GROUPS, id)
    }
    /// The [`RecordHead`] of the registration record of a registration id's key, if there is one.
    pub fn registration_head(&mut self, key: &str) -> Result<Option<RecordHead>, StoreError> {
        self.dps_head(REGISTRATIONS, key)
    }
    /// Deletes the registration record of a registration id's key without reading it; whether there was one.
    pub fn remove_registration(&mut self, key: &str) -> Result<bool, StoreError> {
        self.remove_dps(REGISTRATIONS, key)
    }

    /// The individual enrollment of a registration id's key ([`crate::hub::dps::registration_key`]).
    pub fn enrollment(&mut self, key: &str) -> Result<Option<IndividualEnrollment>, StoreError> {
        self.get(ENROLLMENTS, key)
    }
    /// Stores an individual enrollment under its `registration_id`, which must be the lowercase key.
    pub fn put_enrollment(&mut self, e: &IndividualEnrollment) -> Result<(), StoreError> {
        self.put(ENROLLMENTS, &e.registration_id, e)
    }

    pub fn enrollment_group(&mut self, id: &str) -> Result<Option<EnrollmentGroup>, StoreError> {
        self.get(GROUPS, id)
    }
    pub fn put_enrollment_group(&mut self, g: &EnrollmentGroup) -> Result<(), StoreError> {
        self.put(GROUPS, &g.enrollment_group_id, g)
    }

    /// The registration record of a registration id's key.
    pub fn registration(&mut self, key: &str) -> Result<Option<RegistrationRecord>, StoreError> {
        self.get(REGISTRATIONS, key)
    }
    /// Stores a registration record under its `registration_id`, which must be the lowercase key.
    pub fn put_registration(&mut self, r: &RegistrationRecord) -> Result<(), StoreError> {
        self.put(REGISTRATIONS, &r.registration_id, r)
    }
}

/// A read transaction's view of the DPS tables ([`Store::dps_read`]).
pub struct DpsView<'a> {
    r: &'a ReadTransaction,
}

impl DpsView<'_> {
    fn table(&self, table: DpsTable) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StoreError> {
        match self.r.open_table(table) {
            Ok(t) => Ok(Some(t)),
            // Created at open; absent only in a database another program made.
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(db(e)),
        }
    }
    fn get<T: DeserializeOwned>(&self, table: DpsTable, key: &str) -> Result<Option<T>, StoreError> {
        self.table(table)?.map_or(Ok(None), |t| one(&t, key))
    }
    fn all<T: DeserializeOwned>(&self, table: DpsTable) -> Result<Vec<T>, StoreError> {
        self.table(table)?.map_or(Ok(Vec::new()), |t| all_readable(table, &t))
    }

    /// The individual enrollment of a registration id's key.
    pub fn enrollment(&self, key: &str) -> Result<Option<IndividualEnrollment>, StoreError> {
        self.get(ENROLLMENTS, key)
    }
    /// Every readable individual enrollment.
    pub fn enrollments(&self) -> Result<Vec<IndividualEnrollment>, StoreError> {
        self.all(ENROLLMENTS)
    }
    pub fn enrollment_group(&self, id: &str) -> Result<Option<EnrollmentGroup>, StoreError> {
        self.get(GROUPS, id)
    }
    /// Every readable enrollment group.
    pub fn enrollment_groups(&self) -> Result<Vec<EnrollmentGroup>, StoreError> {
        self.all(GROUPS)
    }
    /// The registration record of a registration id's key.
    pub fn registration(&self, key: &str) -> Result<Option<RegistrationRecord>, StoreError> {
        self.get(REGISTRATIONS, key)
    }
    /// Every readable registration record.
    pub fn registrations(&self) -> Result<Vec<RegistrationRecord>, StoreError> {
        self.all(REGISTRATIONS)
    }
}

impl Store {
    /// Runs a DPS change in a write transaction (see the module docs).
    pub async fn dps<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.write(f).await
    }

    /// Runs a DPS read on a read transaction on the blocking pool, never on the writer (see the module docs).
    pub async fn dps_read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&DpsView<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.read(move |r| f(&DpsView { r })).await
    }
}
