package iridium

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestDedupPersistsAndBounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), DedupFile)
	d, err := OpenDedup(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := d.Add(fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Add("k4"); err != nil { // again: no growth
		t.Fatal(err)
	}
	if d.Len() != 3 {
		t.Errorf("len %d, want 3", d.Len())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d, err = OpenDedup(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Len() != 3 {
		t.Errorf("len after reopen %d", d.Len())
	}
	for i, want := range []bool{false, false, true, true, true} {
		got, err := d.Contains(fmt.Sprintf("k%d", i))
		if err != nil || got != want {
			t.Errorf("k%d: %v %v, want %v", i, got, err, want)
		}
	}
	if err := d.Add(""); err == nil {
		t.Error("empty key accepted")
	}
}

// Claim serialises two deliveries of one key: the second sees the first's
// Add.
func TestDedupClaimSerialises(t *testing.T) {
	d, err := OpenDedup(filepath.Join(t.TempDir(), DedupFile), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	seen, release, err := d.Claim(ctx, "a")
	if err != nil || seen {
		t.Fatalf("first claim: %v %v", seen, err)
	}
	var wg sync.WaitGroup
	var second bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		s, rel, err := d.Claim(ctx, "a")
		if err != nil {
			t.Error(err)
			return
		}
		second = s
		rel()
	}()
	// A claim on another key is not blocked.
	s, rel, err := d.Claim(ctx, "b")
	if err != nil || s {
		t.Fatalf("claim b: %v %v", s, err)
	}
	rel()
	if err := d.Add("a"); err != nil {
		t.Fatal(err)
	}
	release()
	wg.Wait()
	if !second {
		t.Error("second claim did not see the first delivery")
	}

	// A waiting claim gives up with its context.
	_, release, _ = d.Claim(ctx, "c")
	defer release()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, _, err := d.Claim(cctx, "c"); err == nil {
		t.Error("claim of a held key returned before its context ended")
	}
}
