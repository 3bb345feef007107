package decoders_test

import (
	"path/filepath"
	"testing"

	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/internal/testpeers"
)

// shippedDir is configs/decoders of this repository.
func shippedDir() string { return filepath.Join(testpeers.RepoRoot(), "configs", "decoders") }

func samplesDir(t *testing.T) string {
	t.Helper()
	return filepath.Dir(testpeers.Sample(t, "README.md"))
}

// TestShippedDecoderExamples loads every shipped decoder and runs the
// examples each file carries against the shared samples.
func TestShippedDecoderExamples(t *testing.T) {
	set, err := decoders.LoadDir(shippedDir())
	if err != nil {
		t.Fatalf("shipped decoders do not load:\n%v", err)
	}
	if len(set.Names()) == 0 {
		t.Fatal("no shipped decoders")
	}
	samples := samplesDir(t)
	for _, name := range set.Names() {
		d, _ := set.Get(name)
		t.Run(name, func(t *testing.T) {
			results := d.RunExamples(decoders.ExampleOptions{SamplesDir: samples})
			if len(results) == 0 {
				t.Fatal("a shipped decoder must carry examples")
			}
			for _, r := range results {
				if r.Skipped {
					t.Errorf("example skipped with the samples present: %s", r)
					continue
				}
				if !r.Passed {
					t.Errorf("%s", r)
				}
			}
		})
	}
}
