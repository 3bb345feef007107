// Package e2e holds end-to-end tests that run the real binaries as a user
// would: eventstore-sim and vigd are built (testpeers.Binary), started as
// processes with a generated config, fed over TCP by simulated devices that
// wait for their ACK, killed with SIGKILL, starved of disk, given garbled
// queue files and a misbehaving server — and then judged only by what a
// user would check: the records at the simulator, counted one by one, the
// simulator's request log, `vigd deadletters`, /readyz and /metrics.
//
// The package has no code of its own: everything is in the _test.go files.
// `make test` runs the default sizes (a minute or two of wall time);
// `make soak` sets VIGD_SOAK=1 for the long versions (200 kills, the
// 1,000,000-record drain).
package e2e
