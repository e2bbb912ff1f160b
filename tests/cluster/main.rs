//! Integration tests: real `switchboard` processes on loopback, driven through their HTTP APIs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark tools: a failed step ends the run

mod backend;
mod cli;
mod ctl;
mod events;
mod failover;
mod fastpath;
mod flood;
mod harness;
mod health;
mod input;
mod leases;
mod membership;
mod outage;
mod registrations;
mod routing;
mod safety;
mod security;
mod storage;
