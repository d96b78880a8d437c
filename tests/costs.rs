//! What the provision memory (the settling window) costs a cached refusal, as counts rather than
//! times: no upstream call, and not one allocation more than the same refusal with the memory
//! off. A partner's tooling retrying a downgrade is the guard's hottest path; the memory is read
//! only with the site held, which a refusal the cache already knows never takes.
//!
//! The allocations are counted per thread by this binary's global allocator: the test runs on a
//! current-thread runtime, so everything the guard does for a request happens on its thread.

mod common;

use bytes::Bytes;
use common::client;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::{FakeSite, FakeUpstream};
use upgrade_guard::{GuardBody, UpgradeGuardLayer};

/// Counts the allocations made on each thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: an allocation while the thread's locals are being torn down is not counted.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged; counting allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const PROVISION: &str = "/rest/v1.3/jpphp/provision";
/// Sites holding Realtime Backups: Professional is an upgrade, Daily Backups is not.
const REMEMBERING: u64 = 2001;
const FORGETFUL: u64 = 2002;
const REFUSALS: usize = 101;

/// Sends `form` through `guard` to an inner service that answers 200 and provisions nothing
/// upstream (the fake's grant delay keeps its old view anyway): the status, the error code, and
/// how many allocations the call made, the request's own construction left out.
async fn send(guard: &UpgradeGuardLayer, form: &str) -> (u16, String, u64) {
    let inner = service_fn(|_: Request<GuardBody<Full<Bytes>>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let service = guard.layer(inner);
    let request = Request::post(PROVISION)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(form.to_owned()))
        .unwrap();
    let before = allocations();
    let response = service.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let made = allocations() - before;
    let error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|body| body["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, error, made)
}

fn median(mut counts: Vec<u64>) -> u64 {
    counts.sort_unstable();
    counts[counts.len() / 2]
}

#[tokio::test(flavor = "current_thread")]
async fn the_provision_memory_adds_no_call_and_no_allocation_to_a_cached_refusal() {
    let fake = FakeUpstream::builder()
        .site(FakeSite::new(REMEMBERING).holding(["jetpack-backup-realtime"]))
        .site(FakeSite::new(FORGETFUL).holding(["jetpack-backup-realtime"]))
        // Long enough that the memory of the provision below outlives the test.
        .grant_delay(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let remembering = UpgradeGuardLayer::new(client(&fake));
    let forgetful = UpgradeGuardLayer::builder(client(&fake))
        .settling_window(Duration::ZERO)
        .build();
    let sides = [(&remembering, REMEMBERING), (&forgetful, FORGETFUL)];

    for (guard, site) in sides {
        // A provision forwarded and answered 2xx: the remembering guard keeps it for its
        // settling window.
        let form = format!("siteurl={site}&plan=professional&local_user=a");
        assert_eq!(send(guard, &form).await.0, 200, "site {site}");
        // Daily Backups under Realtime Backups: refused by a lookup, whose answer the cache
        // keeps; then refused from the cache, the warm-up of the measurement.
        let form = format!("siteurl={site}&plan=jetpack-backup-daily&local_user=a");
        for _ in 0..20 {
            let (status, error, _) = send(guard, &form).await;
            assert_eq!((status, error.as_str()), (409, "upgrade_not_allowed"));
        }
    }

    let calls = fake.stats().requests;
    let mut counts = [Vec::new(), Vec::new()];
    // The two sides alternate, so whatever the cache's own upkeep does by time hits both alike.
    for _ in 0..REFUSALS {
        for (side, (guard, site)) in sides.into_iter().enumerate() {
            let form = format!("siteurl={site}&plan=jetpack-backup-daily&local_user=a");
            let (status, error, made) = send(guard, &form).await;
            assert_eq!((status, error.as_str()), (409, "upgrade_not_allowed"));
            counts[side].push(made);
        }
    }
    assert_eq!(
        fake.stats().requests,
        calls,
        "a cached refusal asks the upstream nothing"
    );
    let [remembered, forgot] = counts.map(median);
    assert!(remembered > 0, "the allocations are counted");
    assert_eq!(
        remembered, forgot,
        "allocations per cached refusal, with the provision remembered and with the memory off"
    );

    // The memory was held all along: the same provision again is done already.
    let form = format!("siteurl={REMEMBERING}&plan=professional&local_user=a");
    let (status, error, _) = send(&remembering, &form).await;
    assert_eq!((status, error.as_str()), (409, "already_provisioned"));
}
