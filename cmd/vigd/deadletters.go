package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigd/vigd/forwarder/deadletter"
	"github.com/vigd/vigd/internal/config"
)

const deadLettersUsage = `usage: vigd deadletters <list|show|replay|purge> -c FILE [flags] [ID...]
  list   [--class frame|record] [--reason TEXT] [--since DURATION] [--json]
         what could not be decoded (class frame) or was refused upstream
         (class record), with the reason and where it came from
  show   ID...        the whole entry as JSON (the frame's payload is base64)
  replay ID... | --all [--class …] [--reason …]
         frames: decoded again with the decoders as they are now (fix the
         decoder, reload, then replay); records: sent again. A running
         daemon picks them up within seconds, a stopped one at its start.
  purge  ID... | --all [--class …] [--reason …]
  Flags come before the IDs.`

// cmdDeadLetters works on the store folder directly, so it works whether
// the daemon runs or not; a replay is picked up by the running daemon
// within seconds, or at its next start.
func cmdDeadLetters(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{deadLettersUsage}
	}
	sub := args[0]
	if isHelp(sub) || (len(args) > 1 && isHelp(args[1])) {
		fmt.Fprintln(stdout, deadLettersUsage)
		return nil
	}
	fs := newFlags("deadletters " + sub)
	path := fs.String("c", "/etc/vigd/vigd.yaml", "config file")
	class := fs.String("class", "", "only entries of this class (frame, record)")
	reason := fs.String("reason", "", "only entries whose reason contains this text")
	since := fs.Duration("since", 0, "only entries younger than this")
	all := fs.Bool("all", false, "every entry matching the filters")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return &configErrors{errs: flattenErr(err)}
	}
	store, err := deadletter.Open(filepath.Join(cfg.DataDir, "deadletters"), deadletter.Options{MaxBytes: cfg.DeadLetters.MaxBytes})
	if err != nil {
		return err
	}
	filter := deadletter.Filter{Class: *class, Reason: *reason}
	if *since > 0 {
		filter.Since = time.Now().Add(-*since)
	}
	ids := fs.Args()
	selected := func() ([]string, error) {
		if len(ids) > 0 {
			return ids, nil
		}
		if !*all {
			return nil, usageError{"deadletters " + sub + ": give IDs or --all"}
		}
		es, err := store.List(filter)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(es))
		for _, e := range es {
			if !e.Replay {
				out = append(out, e.ID)
			}
		}
		return out, nil
	}
	switch sub {
	case "list", "ls":
		es, err := store.List(filter)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(es)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTIME\tCLASS\tWHERE\tREASON")
		for _, e := range es {
			r := e.Reason
			if e.Replay {
				r = "[replay pending] " + r
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.ID, e.Time.UTC().Format(time.RFC3339), e.Class, e.Where, oneLine(r, 160))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d dead letter(s)\n", len(es))
		return nil
	case "show":
		if len(ids) == 0 {
			return usageError{"deadletters show: give one or more IDs"}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		for _, id := range ids {
			e, err := store.Get(id)
			if err != nil {
				return err
			}
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	case "replay":
		sel, err := selected()
		if err != nil {
			return err
		}
		for _, id := range sel {
			if err := store.MarkReplay(id); err != nil {
				return fmt.Errorf("replay %s: %w", id, err)
			}
		}
		fmt.Fprintf(stdout, "%d dead letter(s) queued for replay; the daemon processes them within seconds (or at its next start)\n", len(sel))
		return nil
	case "purge", "rm":
		sel, err := selected()
		if err != nil {
			return err
		}
		for _, id := range sel {
			if err := store.Delete(id); err != nil {
				return fmt.Errorf("purge %s: %w", id, err)
			}
		}
		fmt.Fprintf(stdout, "%d dead letter(s) purged\n", len(sel))
		return nil
	}
	return usageError{deadLettersUsage}
}

func oneLine(s string, max int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > max {
		s = s[:max-1] + "…"
	}
	return s
}
