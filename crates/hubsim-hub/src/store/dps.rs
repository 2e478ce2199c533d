//! The local DPS's part of the database: its settings (the ID scope), individual enrollments, enrollment groups
//! and registration records, each a table of JSON records keyed by id. Tables are created by the first write
//! that opens them, so older databases need no migration; everything goes through [`Store::write`], reads
//! included, so a DPS answer never sees half of another caller's change.

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use super::{db, from_bytes, Store, StoreError, Tx};
use crate::hub::dps::{EnrollmentGroup, IndividualEnrollment, RegistrationRecord};

const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("dps.settings");
const ENROLLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("dps.enrollments");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("dps.groups");
const REGISTRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("dps.registrations");

impl Tx<'_> {
    fn all<T: DeserializeOwned>(
        &mut self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let t = self.tx.open_table(table).map_err(db)?;
        let it = t.iter().map_err(db)?;
        it.map(|e| e.map_err(db).and_then(|(_, v)| from_bytes(v.value()))).collect()
    }

    /// The ID scope, once generated.
    pub fn dps_id_scope(&mut self) -> Result<Option<String>, StoreError> {
        self.get(SETTINGS, "idScope")
    }
    pub fn put_dps_id_scope(&mut self, scope: &str) -> Result<(), StoreError> {
        self.put(SETTINGS, "idScope", &scope)
    }

    pub fn enrollment(&mut self, registration_id: &str) -> Result<Option<IndividualEnrollment>, StoreError> {
        self.get(ENROLLMENTS, registration_id)
    }
    pub fn put_enrollment(&mut self, e: &IndividualEnrollment) -> Result<(), StoreError> {
        self.put(ENROLLMENTS, &e.registration_id, e)
    }
    pub fn delete_enrollment(&mut self, registration_id: &str) -> Result<bool, StoreError> {
        let existed = self.enrollment(registration_id)?.is_some();
        self.del(ENROLLMENTS, registration_id)?;
        Ok(existed)
    }
    pub fn enrollments(&mut self) -> Result<Vec<IndividualEnrollment>, StoreError> {
        self.all(ENROLLMENTS)
    }

    pub fn enrollment_group(&mut self, id: &str) -> Result<Option<EnrollmentGroup>, StoreError> {
        self.get(GROUPS, id)
    }
    pub fn put_enrollment_group(&mut self, g: &EnrollmentGroup) -> Result<(), StoreError> {
        self.put(GROUPS, &g.enrollment_group_id, g)
    }
    pub fn delete_enrollment_group(&mut self, id: &str) -> Result<bool, StoreError> {
        let existed = self.enrollment_group(id)?.is_some();
        self.del(GROUPS, id)?;
        Ok(existed)
    }
    pub fn enrollment_groups(&mut self) -> Result<Vec<EnrollmentGroup>, StoreError> {
        self.all(GROUPS)
    }

    pub fn registration(&mut self, registration_id: &str) -> Result<Option<RegistrationRecord>, StoreError> {
        self.get(REGISTRATIONS, registration_id)
    }
    pub fn put_registration(&mut self, r: &RegistrationRecord) -> Result<(), StoreError> {
        self.put(REGISTRATIONS, &r.registration_id, r)
    }
    pub fn delete_registration(&mut self, registration_id: &str) -> Result<bool, StoreError> {
        let existed = self.registration(registration_id)?.is_some();
        self.del(REGISTRATIONS, registration_id)?;
        Ok(existed)
    }
    pub fn registrations(&mut self) -> Result<Vec<RegistrationRecord>, StoreError> {
        self.all(REGISTRATIONS)
    }
}

impl Store {
    /// Runs a DPS read in a write transaction (see the module docs).
    pub async fn dps<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.write(f).await
    }
}
