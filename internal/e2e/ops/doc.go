// Package ops holds the tests of running vigd for months: the systemd unit
// (systemd-analyze verify), sd_notify (READY, STATUS, WATCHDOG, STOPPING)
// seen on a real notify socket, the watchdog withheld when the forwarder
// is wedged, reload under traffic over TCP and MQTT, the graceful stop,
// /metrics checked figure by figure against what was sent, logs without
// secrets, and the .deb packages installed and purged with dpkg, with the
// ARM builds run under qemu.
//
// Every test runs the vigd binary as systemd would (testpeers.Binary) and
// judges it by what an operator sees: the notify datagrams, the records at
// the simulator, the log, /metrics, the installed files.
//
// The package has no code of its own: everything is in the _test.go files.
package ops
