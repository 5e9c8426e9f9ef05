package fakeagent

// The rescue user's login: a rescue password checked against its
// crypt(3) SHA-256 or SHA-512 hash.

import "github.com/ironlab/ironlab/internal/shacrypt"

// RescueReadyLine is what a rescued machine prints on its console once
// finalize_rescue ran: the rescue ramdisk is up, and the hash the rescue
// user logs in with (a scenario's rescue_password expectation reads it).
func RescueReadyLine(hash string) string {
	return "ironlab rescue: rescue mode ready; the rescue user's password hash is " + hash + "\n"
}

// RescueLogin reports whether password logs the rescue user in: hash is
// what rescue.finalize_rescue stored (Ironic's SHA-256 or SHA-512 crypt,
// "$5$" or "$6$"), as the rescue ramdisk's /etc/shadow holds it. The
// algorithm is internal/shacrypt's, which the driver hashes with;
// scenarios/contract checks a driver hash logs in.
func RescueLogin(hash, password string) bool {
	return shacrypt.Verify(hash, password)
}
