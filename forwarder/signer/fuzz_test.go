package signer

import (
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary Authorization and Date headers to the parser:
// it must not panic, and nothing but the real signature may verify.
func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	secret := NewSecret("s3cr3t")
	good, _ := Sign(Config{}, "GET", "/p", "", "", now, "svc", secret)
	f.Add(good.Authorization, good.Date)
	f.Add("xCloud dmlnX3Rwcw==:cLgopO2y6HlzcS6YBJLuduA3ubs+PlVUSDvEtH9t6bk=", "2026-03-01T08:00:00Z")
	f.Add("xCloud :", "")
	f.Add("xCloud a:b:c", "2026-03-01T08:00:00+01:00")
	v := &Verifier{Lookup: func(id string) (Secret, bool) { return secret, id == "svc" },
		Now: func() time.Time { return now }}
	f.Fuzz(func(t *testing.T, auth, date string) {
		_, err := v.Verify(Request{Method: "GET", Path: "/p", Date: date}, auth)
		if err == nil && (auth != good.Authorization || date != good.Date) {
			// Another date string for the same instant would need the same
			// signature string, so only the original pair can pass.
			t.Fatalf("verified %q %q", auth, date)
		}
	})
}
