//! The IP→device ledger on Redis: one sorted set per (tenant, IP); members carry the exact
//! lease (`from|until|device`, in ticks), scores its end in microseconds for range pruning.

use std::net::IpAddr;

use ::redis::{cmd, pipe};
use culprit_model::{Duration, Timestamp};

use super::{RedisStores, micros};
use crate::error::check_name;
use crate::keys::enc;
use crate::stores::{LEDGER_RETENTION, check_interval};
use crate::{BoxFuture, CacheError, IpLedger};

impl RedisStores {
    fn ledger_key(&self, tenant: &str, ip: IpAddr) -> String {
        self.key(&["ledger", &enc(tenant), &enc(&ip.to_canonical().to_string())])
    }
}

fn parse_lease(member: &str) -> Result<(Timestamp, Timestamp, &str), CacheError> {
    let bad = || {
        CacheError::corrupt(
            "ledger entry",
            format!("{member:?} is not from|until|device"),
        )
    };
    let mut parts = member.splitn(3, '|');
    let mut tick = || -> Result<Timestamp, CacheError> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .map(Timestamp)
            .ok_or_else(bad)
    };
    let from = tick()?;
    let until = tick()?;
    let device = parts.next().ok_or_else(bad)?;
    Ok((from, until, device))
}

impl IpLedger for RedisStores {
    fn record<'a>(
        &'a self,
        tenant: &'a str,
        ip: IpAddr,
        device_id: &'a str,
        from: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_name("device_id", device_id)?;
            check_interval(from, until)?;
            let k = self.ledger_key(tenant, ip);
            let member = format!("{}|{}|{device_id}", from.0, until.0);
            let horizon = micros(until - Duration::from_std(LEDGER_RETENTION));
            let ttl_ms = u64::try_from(LEDGER_RETENTION.as_millis()).unwrap_or(u64::MAX);
            self.run("ledger record", true, |mut c| {
                let mut p = pipe();
                p.atomic()
                    .cmd("ZADD")
                    .arg(&k)
                    .arg(micros(until))
                    .arg(&member)
                    .ignore()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&k)
                    .arg("-inf")
                    .arg(format!("({horizon}"))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&k)
                    .arg(ttl_ms)
                    .ignore();
                async move { p.exec_async(&mut c).await }
            })
            .await
        })
    }

    fn lookup_window<'a>(
        &'a self,
        tenant: &'a str,
        ip: IpAddr,
        from: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>, CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_interval(from, until)?;
            let k = self.ledger_key(tenant, ip);
            let members: Vec<String> = self
                .run("ledger lookup", true, |mut c| {
                    let k = k.clone();
                    async move {
                        cmd("ZRANGE")
                            .arg(k)
                            .arg(micros(from))
                            .arg("+inf")
                            .arg("BYSCORE")
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            let mut devices = Vec::new();
            for m in &members {
                let (f, u, device) = parse_lease(m)?;
                if f <= until && u >= from {
                    devices.push(device.to_owned());
                }
            }
            devices.sort();
            devices.dedup();
            Ok(devices)
        })
    }
}
