//! libdss: the phobos Distributed State Service lock API, on PostgreSQL,
//! for C programs (see `include/dss.h`).
//!
//! Where to look:
//! * `ffi`      – the C boundary: argument checks, panic guard, errno.
//! * `lock`     – what each lock call on one id does.
//! * `wait`     – dss_lock_wait: queueing and LISTEN/NOTIFY.
//! * `shared`   – shared locks, downgrade, semaphores, holders lists.
//! * `token`    – holds named by token, queues, cancelling (for dssd).
//! * `batch`    – the *_many lock calls.
//! * `kv`       – the key-value store (dss_kv_*).
//! * `sql`      – every SQL statement.
//! * `handle`   – the object behind `dss_handle`, and the fork rules.
//! * `pool`     – connections, prepared statements, the two pools.
//! * `pq`       – the connection to PostgreSQL: libpq, with deadlines.
//! * `config`   – where settings come from.
//! * `error`    – the error type and the errno table.
//! * `registry` – which handle pointers are live.

pub mod batch;
pub mod config;
pub mod error;
pub mod ffi;
pub mod handle;
pub mod kv;
pub mod lock;
pub mod pool;
pub mod pq;
mod registry;
pub mod shared;
pub mod sql;
pub mod token;
pub mod wait;
