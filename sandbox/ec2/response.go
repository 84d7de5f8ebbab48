package ec2

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"time"
)

// Namespace is the XML namespace of every EC2 response.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// Items marshals a list the way EC2 does: one <item> element per member,
// inside the element named by the field that holds it.
type Items[T any] struct {
	Items []T `xml:"item"`
}

// ItemsOf wraps a slice for marshalling.
func ItemsOf[T any](s []T) Items[T] { return Items[T]{Items: s} }

// timestamp formats times as EC2 does (ISO 8601, UTC, milliseconds).
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// envelope is <{Action}Response xmlns=…><requestId/>…</{Action}Response>.
type envelope struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
	Body      []byte `xml:",innerxml"`
}

// marshalResponse renders a handler's result as the body of the action's
// response element. The result's fields become children of the root, next to
// requestId, so a handler's struct lists only the action's own output.
func marshalResponse(action, requestID string, result any) ([]byte, error) {
	// Encode the result under a throwaway element name, then keep only what
	// is inside it, so its fields land directly under the response root.
	const wrap = "w"
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	if err := enc.EncodeElement(result, xml.StartElement{Name: xml.Name{Local: wrap}}); err != nil {
		return nil, fmt.Errorf("marshalling %s response: %w", action, err)
	}
	body, ok := bytes.CutPrefix(buf.Bytes(), []byte("<"+wrap+">"))
	if ok {
		body, ok = bytes.CutSuffix(body, []byte("</"+wrap+">"))
	}
	if !ok {
		return nil, fmt.Errorf("marshalling %s response: result %T must be a struct without attributes", action, result)
	}
	out, err := xml.Marshal(envelope{
		XMLName: xml.Name{Local: action + "Response"}, Xmlns: Namespace, RequestID: requestID, Body: body,
	})
	if err != nil {
		return nil, fmt.Errorf("marshalling %s response: %w", action, err)
	}
	return append([]byte(xml.Header), out...), nil
}

// marshalError renders EC2's error document.
func marshalError(e *Error, requestID string) []byte {
	var b bytes.Buffer
	b.WriteString(xml.Header + "<Response><Errors><Error><Code>")
	_ = xml.EscapeText(&b, []byte(e.Code)) // writes to a bytes.Buffer cannot fail
	b.WriteString("</Code><Message>")
	_ = xml.EscapeText(&b, []byte(e.Message))
	b.WriteString("</Message></Error></Errors><RequestID>")
	_ = xml.EscapeText(&b, []byte(requestID))
	b.WriteString("</RequestID></Response>")
	return b.Bytes()
}
