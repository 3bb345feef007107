package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vigd/vigd/adapters"
	"github.com/vigd/vigd/decoders"
	"github.com/vigd/vigd/internal/config"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// decoderSource is how the tools find decoders: from a config file, or from
// files and folders given directly.
type decoderSource struct {
	config string
	paths  listFlag
}

func (s *decoderSource) register(fs *flag.FlagSet) {
	fs.StringVar(&s.config, "c", "", "config file whose decoders to use (default /etc/vigd/vigd.yaml)")
	fs.Var(&s.paths, "decoders", "decoder file or folder (repeatable); instead of -c")
}

func (s *decoderSource) load() (*decoders.Set, error) {
	set, _, err := s.loadWithConfig()
	return set, err
}

// loadWithConfig also returns the config the decoders came from (nil with
// --decoders).
func (s *decoderSource) loadWithConfig() (*decoders.Set, *config.Config, error) {
	var cfg *config.Config
	if len(s.paths) > 0 {
		cfg = &config.Config{Decoders: s.paths, File: "command line"}
	} else {
		path := s.config
		if path == "" {
			path = "/etc/vigd/vigd.yaml"
		}
		c, err := config.Load(path)
		if err != nil {
			return nil, nil, &configErrors{errs: flattenErr(err)}
		}
		cfg = c
	}
	files, err := cfg.DecoderFiles()
	if err != nil {
		return nil, nil, err
	}
	set, err := decoders.LoadFiles(files...)
	if err != nil {
		return nil, nil, &configErrors{errs: flattenErr(err)}
	}
	if len(s.paths) > 0 {
		cfg = nil
	}
	return set, cfg, nil
}

func cmdDecode(args []string, stdout io.Writer) error {
	fs := newFlags("decode")
	var src decoderSource
	src.register(fs)
	name := fs.String("d", "", "decoder name (required)")
	hexIn := fs.String("hex", "", "the frame as hex")
	fileIn := fs.String("file", "", "the frame from a file (- for standard input)")
	textIn := fs.String("text", "", "the frame as text")
	identity := fs.String("identity", "", "what the transport knows of the device (IMEI, topic segment, …)")
	customer := fs.String("customer", "", "default customer id")
	received := fs.String("received", "", "received time, RFC 3339 (default now)")
	var meta listFlag
	fs.Var(&meta, "meta", "transport metadata key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return usageError{"decode: -d DECODER is required"}
	}
	n := 0
	for _, s := range []string{*hexIn, *fileIn, *textIn} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return usageError{"decode: give exactly one of --hex, --file, --text"}
	}
	var payload []byte
	var err error
	switch {
	case *hexIn != "":
		payload, err = hex.DecodeString(strings.Join(strings.Fields(*hexIn), ""))
		if err != nil {
			return usageError{fmt.Sprintf("decode: --hex: %v", err)}
		}
	case *fileIn == "-":
		payload, err = io.ReadAll(os.Stdin)
	case *fileIn != "":
		payload, err = os.ReadFile(*fileIn)
	default:
		payload = []byte(*textIn)
	}
	if err != nil {
		return err
	}
	set, cfg, err := src.loadWithConfig()
	if err != nil {
		return err
	}
	dec, ok := set.Get(*name)
	if !ok {
		return fmt.Errorf("no decoder named %q (have %s)", *name, strings.Join(set.Names(), ", "))
	}
	// With -c, the customer is the one the config's adapters give frames
	// of this decoder, when they agree.
	if *customer == "" && cfg != nil {
		seen := map[string]bool{}
		for _, a := range cfg.Adapters {
			if a.Decoder == *name && a.CustomerID != "" {
				seen[a.CustomerID] = true
			}
		}
		if len(seen) == 1 {
			for c := range seen {
				*customer = c
			}
		}
	}
	f := &adapters.Frame{Adapter: "decode", Kind: "cli", Source: "input", Offset: 0, Payload: payload,
		Identity: *identity, CustomerID: *customer, Decoder: *name, Received: time.Now().UTC(), Meta: map[string]string{}}
	if *received != "" {
		if f.Received, err = time.Parse(time.RFC3339, *received); err != nil {
			return usageError{fmt.Sprintf("decode: --received: %v", err)}
		}
	}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usageError{fmt.Sprintf("decode: --meta %q: want key=value", kv)}
		}
		f.Meta[k] = v
	}
	res, err := dec.Decode(f, decoders.Env{DefaultCustomer: *customer, Alarms: map[string]bool{}})
	if err != nil {
		if *customer == "" && strings.Contains(err.Error(), "customerId") {
			return fmt.Errorf("%w (give one with --customer)", err)
		}
		return err
	}
	out := map[string]any{
		"device":       res.Device,
		"things":       res.Things,
		"datastreams":  res.Datastreams,
		"observations": res.Observations,
		"alarms":       res.Alarms,
	}
	if len(res.Skipped) > 0 {
		out["skipped"] = res.Skipped
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func cmdDecodersTest(args []string, stdout io.Writer) error {
	fs := newFlags("decoders test")
	var src decoderSource
	src.register(fs)
	samples := fs.String("samples", "", "folder that ${SAMPLES} in example paths means (default ../shared/samples beside the repository, when present)")
	verbose := fs.Bool("v", false, "list passing examples too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if src.config == "" && len(src.paths) == 0 {
		if _, err := os.Stat("/etc/vigd/vigd.yaml"); err != nil {
			src.paths = append(src.paths, "configs/decoders")
		}
	}
	set, err := src.load()
	if err != nil {
		return err
	}
	if *samples == "" {
		*samples = findSamples()
	}
	names := set.Names()
	sort.Strings(names)
	var passed, failed, skipped int
	for _, n := range names {
		dec, _ := set.Get(n)
		for _, r := range dec.RunExamples(decoders.ExampleOptions{SamplesDir: *samples}) {
			switch {
			case r.Skipped:
				skipped++
				fmt.Fprintln(stdout, r.String())
			case r.Passed:
				passed++
				if *verbose {
					fmt.Fprintln(stdout, r.String())
				}
			default:
				failed++
				fmt.Fprintln(stdout, r.String())
			}
		}
	}
	fmt.Fprintf(stdout, "decoders: %d passed, %d failed, %d skipped (%d decoders)\n", passed, failed, skipped, len(names))
	if failed > 0 {
		return fmt.Errorf("%d decoder example(s) failed", failed)
	}
	return nil
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// findSamples looks for ../shared/samples beside the repository: from the
// working folder (make runs at the repository root) and from the binary's
// folder (bin/vigd).
func findSamples() string {
	cands := []string{filepath.Join("..", "shared", "samples")}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), "..", "..", "shared", "samples"))
	}
	for _, c := range cands {
		if dirExists(c) {
			return c
		}
	}
	return ""
}
