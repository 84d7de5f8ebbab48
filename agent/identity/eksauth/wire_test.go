package eksauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// sample is the answer of the SDK's response snapshot for this operation,
// with values filled in.
const sample = `{"assumedRoleUser":{"arn":"arn:aws:sts::111122223333:assumed-role/r/s","assumeRoleId":"AROAX:s"},` +
	`"audience":"pods.eks.amazonaws.com","credentials":{"accessKeyId":"ASIAX","expiration":946684800,` +
	`"secretAccessKey":"secret","sessionToken":"session"},"podIdentityAssociation":{"associationArn":"arn:aws:eks:us-west-2:111122223333:podidentityassociation/c/a-1",` +
	`"associationId":"a-1"},"subject":{"namespace":"default","serviceAccount":"app"}}`

func TestParseResponse(t *testing.T) {
	out, err := ParseResponse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if !out.Credentials.Expiration.Equal(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("expiration = %v", out.Credentials.Expiration)
	}
	if out.AccountID() != "111122223333" || out.Subject.ServiceAccount != "app" || out.PodIdentityAssociation.AssociationID != "a-1" {
		t.Errorf("parsed %+v", out)
	}

	for _, tc := range []struct{ name, body string }{
		{"not json", `nope`},
		{"empty object", `{}`},
		{"no session token", `{"assumedRoleUser":{"arn":"arn:aws:sts::1:assumed-role/r/s"},"credentials":{"accessKeyId":"a","secretAccessKey":"s","expiration":1}}`},
		{"no expiration", `{"assumedRoleUser":{"arn":"arn:aws:sts::1:assumed-role/r/s"},"credentials":{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t"}}`},
		{"string expiration", `{"assumedRoleUser":{"arn":"arn:aws:sts::1:assumed-role/r/s"},"credentials":{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":"2000-01-01T00:00:00Z"}}`},
		{"negative expiration", `{"assumedRoleUser":{"arn":"arn:aws:sts::1:assumed-role/r/s"},"credentials":{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":-5}}`},
		{"bad arn", `{"assumedRoleUser":{"arn":"role"},"credentials":{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":1}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out, err := ParseResponse([]byte(tc.body)); err == nil {
				t.Errorf("ParseResponse(%s) = %+v, want an error", tc.body, out)
			}
		})
	}
}

func TestEpochSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{`946684800`, time.Unix(946684800, 0)},
		{`946684800.5`, time.Unix(946684800, 5e8)},
		{`9.466848E8`, time.Unix(946684800, 0)},
	} {
		var got EpochSeconds
		if err := json.Unmarshal([]byte(tc.in), &got); err != nil || !got.Equal(tc.want) {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		b, err := json.Marshal(got)
		var back EpochSeconds
		if err != nil || json.Unmarshal(b, &back) != nil || !back.Equal(got.Time) {
			t.Errorf("round trip of %s through %s = %v, %v", tc.in, b, back, err)
		}
	}
}

func TestParseError(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		code, msg string
		retryable bool
	}{
		{"body __type", 400, nil, `{"__type":"InvalidTokenException","message":"bad"}`, CodeInvalidToken, "bad", false},
		{"namespaced __type", 400, nil, `{"__type":"aws.eksauth#ExpiredTokenException","message":"old"}`, CodeExpiredToken, "old", false},
		{"header wins", 429, map[string]string{"X-Amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/"}, `{"__type":"Other","Message":"slow"}`, CodeThrottling, "slow", true},
		{"code field", 404, nil, `{"code":"ResourceNotFoundException","message":"gone"}`, CodeResourceNotFound, "gone", false},
		{"no json 503", 503, nil, `<html>busy</html>`, "ServiceUnavailable", "", true},
		{"internal", 500, nil, `{"__type":"InternalServerException"}`, CodeInternalServer, "", true},
		{"empty 502", 502, nil, ``, "BadGateway", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"X-Amzn-Requestid": {"req-1"}}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			e := ParseError(tc.status, h, []byte(tc.body))
			if e.Code != tc.code || e.Message != tc.msg || e.StatusCode != tc.status || e.RequestID != "req-1" {
				t.Errorf("ParseError = %+v, want code %q message %q", e, tc.code, tc.msg)
			}
			if got := retry.NewStandard().IsErrorRetryable(e); got != tc.retryable {
				t.Errorf("standard retryer says retryable = %v, want %v", got, tc.retryable)
			}
		})
	}
}

func TestUnrecoverable(t *testing.T) {
	for code, want := range map[string]bool{
		CodeAccessDenied: true, CodeInvalidToken: true, CodeExpiredToken: true, CodeResourceNotFound: true,
		CodeThrottling: false, CodeInternalServer: false, CodeServiceUnavailable: false, CodeInvalidRequest: false,
	} {
		err := wrap(&APIError{Code: code})
		if got := Unrecoverable(err); got != want {
			t.Errorf("Unrecoverable(%s) = %v, want %v", code, got, want)
		}
	}
	if Unrecoverable(errors.New("timeout")) {
		t.Error("a plain error is unrecoverable")
	}
}

func wrap(err error) error { return errors.Join(errors.New("context"), err) }

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(`{"credentials":{"expiration":1e300}}`))
	f.Add([]byte(`{"credentials":{"expiration":1.5}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := ParseResponse(body)
		if err != nil {
			return
		}
		c := out.Credentials
		if c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "" || c.Expiration.IsZero() || out.AccountID() == "" && out.AssumedRoleUser.Arn == "" {
			t.Fatalf("accepted incomplete answer %+v", out)
		}
	})
}

func FuzzParseError(f *testing.F) {
	f.Add(400, "InvalidTokenException", []byte(`{"__type":"aws.eksauth#InvalidTokenException","message":"m"}`))
	f.Add(503, "", []byte(`not json`))
	f.Add(0, "x:y#z", []byte(`{"code":5}`))
	f.Fuzz(func(t *testing.T, status int, typ string, body []byte) {
		e := ParseError(status, http.Header{"X-Amzn-Errortype": {typ}}, body)
		if e.Code == "" {
			t.Fatalf("ParseError(%d, %q, %q) has no code", status, typ, body)
		}
		_ = e.Error()
		_ = e.ErrorFault()
	})
}
