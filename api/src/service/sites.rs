//! Projects, devices and detectors of a tenant, within the caller's project scope.
//! Objects outside the scope or tenant are reported as `NOT_FOUND`, never `FORBIDDEN`, so
//! that ids from other tenants reveal nothing.

use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId};
use sparkwatch_domain::site::{
    Detector, DetectorDraft, DetectorInput, Device, DeviceDraft, DeviceInput, DeviceTransport, Project, ProjectDraft,
};

use super::users::conflict_or;
use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::oplog::Entry;
use crate::store::sites::{self as st, DetectorFilter, DeviceFilter, ProjectFilter};
use crate::store::{Page, PageRequest};

/// The editable device fields as input, from a stored draft (for partial updates).
pub fn device_input(d: &DeviceDraft) -> DeviceInput {
    DeviceInput {
        serial: d.serial.clone(),
        name: d.name.clone(),
        model: d.model.clone(),
        device_type: d.device_type.clone(),
        transport: d.transport.code().to_owned(),
        host: d.host.clone(),
        port: d.port.map(i64::from),
        interval_s: Some(i64::from(d.interval_s)),
        region: d.region.clone(),
        position: d.position.clone(),
    }
}

/// The editable detector fields as input, from a stored draft (for partial updates).
pub fn detector_input(d: &DetectorDraft) -> DetectorInput {
    DetectorInput {
        address: i64::from(d.address),
        name: d.name.clone(),
        region: d.region.clone(),
        position: d.position.clone(),
        leak_channels: Some(i64::from(d.leak_channels)),
        temp_channels: Some(i64::from(d.temp_channels)),
        has_voltage: Some(d.has_voltage),
        has_current: Some(d.has_current),
    }
}

const PROJECT_NAME_TAKEN: &str = "a project with this name already exists in the tenant";

impl Services {
    // ---- projects ----

    /// A visible project.
    pub async fn project(&self, who: &Principal, id: ProjectId) -> AppResult<Project> {
        st::project(self.inner.store.db(), who.tenant()?, &who.access.scope, id)
            .await?
            .ok_or(AppError::NotFound("project"))
    }

    /// Visible projects.
    pub async fn projects(
        &self,
        who: &Principal,
        filter: &ProjectFilter,
        req: PageRequest,
    ) -> AppResult<Page<Project>> {
        Ok(st::projects(self.inner.store.db(), who.tenant()?, &who.access.scope, filter, req).await?)
    }

    /// Creates a project.
    pub async fn create_project(&self, who: &Principal, draft: ProjectDraft) -> AppResult<Project> {
        let tenant = who.tenant()?;
        let draft = draft.validate()?;
        let tx = self.begin().await?;
        let p =
            st::insert_project(&tx, tenant, draft, self.now()).await.map_err(|e| conflict_or(e, PROJECT_NAME_TAKEN))?;
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), "project.create", "project", Some(p.id.to_string())).after(snapshot(&p)),
        )
        .await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Changes a visible project; `change` edits a copy of its fields, which is then validated.
    pub async fn update_project(
        &self,
        who: &Principal,
        id: ProjectId,
        change: impl FnOnce(&mut ProjectDraft),
    ) -> AppResult<Project> {
        let before = self.project(who, id).await?;
        let mut p = before.clone();
        change(&mut p.draft);
        p.draft = p.draft.validate()?;
        let tx = self.begin().await?;
        st::update_project(&tx, &p).await.map_err(|e| conflict_or(e, PROJECT_NAME_TAKEN))?;
        self.log(
            &tx,
            who,
            Entry::new(Some(p.tenant_id), "project.update", "project", Some(id.to_string()))
                .before(snapshot(&before))
                .after(snapshot(&p)),
        )
        .await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Deletes an empty project.
    pub async fn delete_project(&self, who: &Principal, id: ProjectId) -> AppResult<bool> {
        let p = self.project(who, id).await?;
        let tx = self.begin().await?;
        let devices = st::device_count(&tx, id).await?;
        if devices > 0 {
            return Err(AppError::Conflict(format!(
                "the project still has {devices} device(s); move or delete them first"
            )));
        }
        st::delete_project(&tx, &p).await?;
        self.log(
            &tx,
            who,
            Entry::new(Some(p.tenant_id), "project.delete", "project", Some(id.to_string())).before(snapshot(&p)),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Number of devices in a visible project.
    pub async fn project_device_count(&self, id: ProjectId) -> AppResult<u64> {
        Ok(st::device_count(self.inner.store.db(), id).await?)
    }

    // ---- devices ----

    /// A visible device.
    pub async fn device(&self, who: &Principal, id: DeviceId) -> AppResult<Device> {
        st::device(self.inner.store.db(), who.tenant()?, &who.access.scope, id)
            .await?
            .ok_or(AppError::NotFound("device"))
    }

    /// Visible devices.
    pub async fn devices(&self, who: &Principal, filter: &DeviceFilter, req: PageRequest) -> AppResult<Page<Device>> {
        Ok(st::devices(self.inner.store.db(), who.tenant()?, &who.access.scope, filter, req).await?)
    }

    /// Registers a device in a visible project (without a claim code: refused when serial
    /// claiming is on, unless the caller is the platform itself).
    pub async fn create_device(&self, who: &Principal, project_id: ProjectId, input: DeviceInput) -> AppResult<Device> {
        self.register_device(who, project_id, input, None).await
    }

    /// Registers a device in a visible project, with the claim code from its label when
    /// serial claiming is on; the gateway address, its network and the serial are checked
    /// by [`super::registration`].
    pub async fn register_device(
        &self,
        who: &Principal,
        project_id: ProjectId,
        input: DeviceInput,
        claim_code: Option<&str>,
    ) -> AppResult<Device> {
        let project = self.project(who, project_id).await?;
        let draft = input.validate(project.id)?;
        let resolved = self.check_gateway_network(&draft).await?;
        let tx = self.begin().await?;
        self.check_serial(&tx, who, project.tenant_id, &draft.serial, claim_code).await?;
        self.take_gateway(&tx, project.tenant_id, &draft, &resolved).await?;
        let d = st::insert_device(&tx, project.tenant_id, draft, self.now())
            .await
            .map_err(|e| conflict_or(e, "this serial is already registered"))?;
        self.log(
            &tx,
            who,
            Entry::new(Some(d.tenant_id), "device.create", "device", Some(d.id.to_string())).after(snapshot(&d)),
        )
        .await?;
        tx.commit().await?;
        self.sites_changed();
        Ok(d)
    }

    /// Changes a visible device; moving it to another visible project moves its detectors.
    pub async fn update_device(
        &self,
        who: &Principal,
        id: DeviceId,
        project_id: Option<ProjectId>,
        change: impl FnOnce(&mut DeviceInput),
    ) -> AppResult<Device> {
        self.update_device_claimed(who, id, project_id, None, change).await
    }

    /// [`Self::update_device`] with the claim code of a new serial (serial claiming).
    pub async fn update_device_claimed(
        &self,
        who: &Principal,
        id: DeviceId,
        project_id: Option<ProjectId>,
        claim_code: Option<&str>,
        change: impl FnOnce(&mut DeviceInput),
    ) -> AppResult<Device> {
        let before = self.device(who, id).await?;
        let target = match project_id {
            Some(p) => self.project(who, p).await?.id,
            None => before.draft.project_id,
        };
        let mut input = device_input(&before.draft);
        change(&mut input);
        let mut d = before.clone();
        d.draft = input.validate(target)?;
        let gateway_changed = (d.draft.transport, &d.draft.host, d.draft.port)
            != (before.draft.transport, &before.draft.host, before.draft.port);
        let resolved = if gateway_changed { self.check_gateway_network(&d.draft).await? } else { Vec::new() };
        let tx = self.begin().await?;
        if d.draft.serial != before.draft.serial {
            self.check_serial(&tx, who, d.tenant_id, &d.draft.serial, claim_code).await?;
        }
        if gateway_changed {
            self.take_gateway(&tx, d.tenant_id, &d.draft, &resolved).await?;
        }
        st::update_device(&tx, &d).await.map_err(|e| conflict_or(e, "this serial is already registered"))?;
        if gateway_changed {
            self.release_gateway(&tx, d.tenant_id, &before.draft).await?;
        }
        if target != before.draft.project_id {
            st::move_detectors(&tx, id, target).await?;
        }
        self.log(
            &tx,
            who,
            Entry::new(Some(d.tenant_id), "device.update", "device", Some(id.to_string()))
                .before(snapshot(&before))
                .after(snapshot(&d)),
        )
        .await?;
        tx.commit().await?;
        self.sites_changed();
        // The broker account is named after the serial: an old name left behind would let
        // the old secret publish for whichever device registers that serial next.
        if before.draft.transport == DeviceTransport::Mqtt
            && (d.draft.serial != before.draft.serial || d.draft.transport != DeviceTransport::Mqtt)
        {
            self.forget_device_account(&before.draft.serial).await;
        }
        Ok(d)
    }

    /// Deletes a visible device and its detectors.
    pub async fn delete_device(&self, who: &Principal, id: DeviceId) -> AppResult<bool> {
        let d = self.device(who, id).await?;
        let tx = self.begin().await?;
        st::delete_device(&tx, &d).await?;
        self.release_gateway(&tx, d.tenant_id, &d.draft).await?;
        self.log(
            &tx,
            who,
            Entry::new(Some(d.tenant_id), "device.delete", "device", Some(id.to_string())).before(snapshot(&d)),
        )
        .await?;
        tx.commit().await?;
        self.sites_changed();
        if d.draft.transport == DeviceTransport::Mqtt {
            self.forget_device_account(&d.draft.serial).await;
        }
        Ok(true)
    }

    // ---- detectors ----

    /// A visible detector.
    pub async fn detector(&self, who: &Principal, id: DetectorId) -> AppResult<Detector> {
        st::detector(self.inner.store.db(), who.tenant()?, &who.access.scope, id)
            .await?
            .ok_or(AppError::NotFound("detector"))
    }

    /// Visible detectors.
    pub async fn detectors(
        &self,
        who: &Principal,
        filter: &DetectorFilter,
        req: PageRequest,
    ) -> AppResult<Page<Detector>> {
        Ok(st::detectors(self.inner.store.db(), who.tenant()?, &who.access.scope, filter, req).await?)
    }

    /// Adds a detector to a visible device.
    pub async fn create_detector(
        &self,
        who: &Principal,
        device_id: DeviceId,
        input: DetectorInput,
    ) -> AppResult<Detector> {
        let device = self.device(who, device_id).await?;
        let draft = input.validate(device.id)?;
        let address = draft.address;
        let tx = self.begin().await?;
        let d = st::insert_detector(&tx, device.tenant_id, device.draft.project_id, draft, self.now())
            .await
            .map_err(|e| address_taken(e, address))?;
        self.log(
            &tx,
            who,
            Entry::new(Some(d.tenant_id), "detector.create", "detector", Some(d.id.to_string())).after(snapshot(&d)),
        )
        .await?;
        tx.commit().await?;
        self.sites_changed();
        Ok(d)
    }

    /// Changes a visible detector.
    pub async fn update_detector(
        &self,
        who: &Principal,
        id: DetectorId,
        change: impl FnOnce(&mut DetectorInput),
    ) -> AppResult<Detector> {
        let before = self.detector(who, id).await?;
        let mut input = detector_input(&before.draft);
        change(&mut input);
        let mut d = before.clone();
        d.draft = input.validate(before.draft.device_id)?;
        let tx = self.begin().await?;
        st::update_detector(&tx, &d).await.map_err(|e| address_taken(e, d.draft.address))?;
        self.log(
            &tx,
            who,
            Entry::new(Some(d.tenant_id), "detector.update", "detector", Some(id.to_string()))
                .before(snapshot(&before))
                .after(snapshot(&d)),
        )
        .await?;
        tx.commit().await?;
        self.sites_changed();
        Ok(d)
    }

    /// Deletes a visible detector.
    pub async fn delete_detector(&self, who: &Principal, id: DetectorId) -> AppResult<bool> {
        let d = self.detector(who, id).await?;
        let tx = self.begin().await?;
        st::delete_detector(&tx, &d).await?;
        self.log(
            &tx,
            who,
            Entry::new(Some(d.tenant_id), "detector.delete", "detector", Some(id.to_string())).before(snapshot(&d)),
        )
        .await?;
        tx.commit().await?;
        self.sites_changed();
        Ok(true)
    }
}

fn address_taken(err: sea_orm::DbErr, address: u8) -> AppError {
    conflict_or(err, &format!("the device already has a detector at address {address}"))
}
