//! Integration tests: real `switchboard` processes on loopback, driven through their HTTP APIs.

mod backend;
mod cli;
mod failover;
mod flood;
mod harness;
mod input;
mod leases;
mod membership;
mod registrations;
mod routing;
mod safety;
mod security;
mod storage;
