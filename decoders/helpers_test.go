package decoders_test

import (
	"testing"

	"github.com/vigd/vigd/internal/testpeers"
)

func sampleFile(t testing.TB, name string) string {
	t.Helper()
	return testpeers.Sample(t, name)
}
