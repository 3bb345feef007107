package sim

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vigd/vigd/forwarder/signer"
)

// Client talks to a running simulator: the /_sim/ admin API for tests'
// assertions and fault injection, and Post for signed eventstore requests.
type Client struct {
	BaseURL string       // "http://127.0.0.1:PORT"
	HTTP    *http.Client // nil: a client with a 60 s timeout
	// ServiceID, Secret and Signer sign Post requests.
	ServiceID string
	Secret    signer.Secret
	Signer    signer.Config
	Now       func() time.Time // Date of Post requests (nil: time.Now)
}

var defaultHTTP = &http.Client{Timeout: 60 * time.Second}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("sim client: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("sim client: %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("sim client: %s %s: %w", method, path, err)
	}
	return nil
}

// Records returns the stored records that match q (q.Kind is required).
func (c *Client) Records(ctx context.Context, q Query) ([]Record, error) {
	v := url.Values{"kind": {q.Kind}}
	for k, s := range map[string]string{"deviceId": q.DeviceID, "customerId": q.CustomerID,
		"datastream": q.Datastream, "batchId": q.BatchID} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.AfterSeq > 0 {
		v.Set("after", strconv.FormatInt(q.AfterSeq, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out []Record
	err := c.do(ctx, http.MethodGet, "/_sim/records?"+v.Encode(), nil, &out)
	return out, err
}

// Counts returns the counters.
func (c *Client) Counts(ctx context.Context) (Counts, error) {
	var out Counts
	err := c.do(ctx, http.MethodGet, "/_sim/counts", nil, &out)
	return out, err
}

// Requests returns the logged requests with Seq > since, oldest first.
func (c *Client) Requests(ctx context.Context, since int64) ([]RequestLog, error) {
	var out []RequestLog
	err := c.do(ctx, http.MethodGet, "/_sim/requests?since="+strconv.FormatInt(since, 10), nil, &out)
	return out, err
}

// Entities lists the things or datastreams the simulator knows.
func (c *Client) Entities(ctx context.Context, kind string) ([]Entity, error) {
	var out []Entity
	err := c.do(ctx, http.MethodGet, "/_sim/entities?kind="+url.QueryEscape(kind), nil, &out)
	return out, err
}

// InjectFault installs f and returns its id.
func (c *Client) InjectFault(ctx context.Context, f Fault) (int, error) {
	var out struct{ IDs []int }
	if err := c.do(ctx, http.MethodPost, "/_sim/faults", f, &out); err != nil {
		return 0, err
	}
	if len(out.IDs) != 1 {
		return 0, fmt.Errorf("sim client: fault ids %v", out.IDs)
	}
	return out.IDs[0], nil
}

// Faults lists the installed faults.
func (c *Client) Faults(ctx context.Context) ([]ActiveFault, error) {
	var out []ActiveFault
	err := c.do(ctx, http.MethodGet, "/_sim/faults", nil, &out)
	return out, err
}

// RemoveFault removes one fault; ClearFaults removes all.
func (c *Client) RemoveFault(ctx context.Context, id int) error {
	return c.do(ctx, http.MethodDelete, "/_sim/faults/"+strconv.Itoa(id), nil, nil)
}

// ClearFaults removes every installed fault.
func (c *Client) ClearFaults(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/_sim/faults", nil, nil)
}

// Reset clears faults, counters and the request log, and with data also
// every stored record, batch id and entity.
func (c *Client) Reset(ctx context.Context, data bool) error {
	return c.do(ctx, http.MethodPost, "/_sim/reset?data="+strconv.FormatBool(data), nil, nil)
}

// PostOptions change how Post builds a request, mostly to make bad ones.
type PostOptions struct {
	Gzip       bool      // gzip the body (Content-MD5 is then of the gzip bytes)
	Date       time.Time // zero: Client.Now
	ContentMD5 *string   // override the computed Content-MD5 (signed as given)
	Query      string    // appended to the path after "?" and signed
}

// Response is a Post answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the answer's body into v.
func (r *Response) JSON(v any) error { return json.Unmarshal(r.Body, v) }

// Post signs body and sends it to an endpoint (Things … Raw).
func (c *Client) Post(ctx context.Context, kind string, body []byte, opt *PostOptions) (*Response, error) {
	if opt == nil {
		opt = &PostOptions{}
	}
	path := Path(kind)
	if path == "" {
		return nil, fmt.Errorf("sim client: unknown endpoint %q", kind)
	}
	if opt.Query != "" {
		path += "?" + opt.Query
	}
	wire := body
	if opt.Gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		_ = zw.Close()
		wire = buf.Bytes()
	}
	md5v := signer.BodyMD5(wire)
	if opt.ContentMD5 != nil {
		md5v = *opt.ContentMD5
	}
	date := opt.Date
	if date.IsZero() {
		date = time.Now()
		if c.Now != nil {
			date = c.Now()
		}
	}
	h, err := signer.Sign(c.Signer, http.MethodPost, path, "application/json", md5v, date, c.ServiceID, c.Secret)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+path, bytes.NewReader(wire))
	if err != nil {
		return nil, err
	}
	h.Apply(req.Header)
	if opt.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}
