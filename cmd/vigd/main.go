// Command vigd is the gateway daemon and its tools:
//
//	vigd run -c /etc/vigd/vigd.yaml        the service
//	vigd check -c FILE                     config and every decoder; all errors, file:line:col
//	vigd decode -d DECODER --hex H|--file F   one frame through one decoder, as the JSON that would be sent
//	vigd decoders test [-c FILE|--decoders DIR]   the examples inside every decoder
//	vigd deadletters list|show|replay|purge -c FILE
//	vigd version
//
// Exit codes: 0 ok, 1 failure, 2 usage, 78 configuration error (EX_CONFIG;
// systemd's RestartPreventExitStatus=78 keeps a broken config from looping).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// version is set at build time (-X main.version=...).
var version = "dev"

const (
	exitOK     = 0
	exitFail   = 1
	exitUsage  = 2
	exitConfig = 78
)

// errConfig marks configuration errors (exit 78).
var errConfig = errors.New("configuration error")

// usageError marks bad command lines (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: vigd <command> [flags]

commands:
  run -c FILE                      run the daemon
  check -c FILE                    check the config and every decoder
  decode -d DECODER (--hex H | --file F | --text T) [-c FILE | --decoders DIR]
                                   decode one frame, print the records as JSON
  decoders test [-c FILE | --decoders DIR] [--samples DIR]
                                   run the examples inside every decoder
  deadletters list|show|replay|purge -c FILE [ID…|--all]
                                   inspect and replay what could not be decoded or delivered
  version                          print the version
`

func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "decode":
		err = cmdDecode(args[1:], stdout)
	case "decoders":
		if len(args) < 2 || args[1] != "test" {
			if len(args) >= 2 && isHelp(args[1]) {
				fmt.Fprintln(stdout, decodersUsage)
				return exitOK
			}
			err = usageError{decodersUsage}
			break
		}
		err = cmdDecodersTest(args[2:], stdout)
	case "deadletters", "deadletter", "dl":
		err = cmdDeadLetters(args[1:], stdout)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "vigd %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "vigd: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "vigd:", err)
		return exitUsage
	case errors.Is(err, flag.ErrHelp):
		return exitUsage
	case errors.Is(err, errConfig):
		fmt.Fprintln(stderr, err)
		return exitConfig
	default:
		fmt.Fprintln(stderr, "vigd:", err)
		return exitFail
	}
}

const decodersUsage = `usage: vigd decoders test [-c FILE | --decoders DIR]... [--samples DIR] [-v]
  Runs the examples inside every decoder file (input → expected records) and
  prints a diff for each mismatch; exits 1 when one fails. -c takes the
  decoders of a config file; --decoders a file or folder (repeatable);
  without either, /etc/vigd/vigd.yaml, or configs/decoders in a checkout.
  ${SAMPLES} in example paths is --samples (default: ../shared/samples).`

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "-help" || s == "help" }

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}
