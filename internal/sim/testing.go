package sim

import "testing"

// StartTest runs a simulator on 127.0.0.1:0 for one test: DataDir defaults
// to a fresh t.TempDir(), and the server is closed on cleanup. Other
// packages' tests use it with Server.Client to post and to assert.
func StartTest(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		s.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("sim close: %v", err)
		}
	})
	return s
}
