package ec2

import (
	"context"
	"encoding/base64"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Launch-template error codes, as EC2 spells them.
const (
	CodeLaunchTemplateNameExists    = "InvalidLaunchTemplateName.AlreadyExistsException"
	CodeLaunchTemplateNameMalformed = "InvalidLaunchTemplateName.MalformedException"
	CodeLaunchTemplateNameNotFound  = "InvalidLaunchTemplateName.NotFoundException"
	CodeLaunchTemplateIDNotFound    = "InvalidLaunchTemplateId.NotFound"
	CodeLaunchTemplateIDMalformed   = "InvalidLaunchTemplateId.Malformed"
	CodeLaunchTemplateVersion       = "InvalidLaunchTemplateId.VersionNotFound"
	CodeUserDataMalformed           = "InvalidUserData.Malformed"
)

// launchTemplateName is EC2's rule for template names.
var launchTemplateName = regexp.MustCompile(`^[a-zA-Z0-9().\-/_]{3,128}$`)

// maxUserData is EC2's limit on user data, before base64.
const maxUserData = 16 << 10

// LaunchTemplate is one stored launch template (version 1 only; the sandbox
// does not version templates).
type LaunchTemplate struct {
	ID         string
	Name       string
	CreateTime time.Time
	Tags       map[string]string

	ImageID            string
	InstanceType       string
	InstanceProfile    string // name or ARN, as given
	SecurityGroupIDs   []string
	UserData           []byte // decoded
	BlockDevices       []BlockDevice
	InstanceTags       map[string]string // TagSpecification for "instance"
	VolumeTags         map[string]string // TagSpecification for "volume"
	MetadataHTTPTokens string
}

// BlockDevice is one block device mapping of a launch template.
type BlockDevice struct {
	DeviceName          string
	VolumeSizeGiB       int
	VolumeType          string
	IOPS, Throughput    int
	Encrypted           bool
	KMSKeyID            string
	DeleteOnTermination bool
	SnapshotID          string
}

// LaunchTemplate returns a copy of the template with the given id or name.
func (s *Server) LaunchTemplate(idOrName string) (LaunchTemplate, bool) {
	s.launch.mu.Lock()
	defer s.launch.mu.Unlock()
	if t := s.launch.template(idOrName, idOrName); t != nil {
		return t.clone(), true
	}
	return LaunchTemplate{}, false
}

func (t *LaunchTemplate) clone() LaunchTemplate {
	c := *t
	c.Tags, c.InstanceTags, c.VolumeTags = maps.Clone(t.Tags), maps.Clone(t.InstanceTags), maps.Clone(t.VolumeTags)
	c.SecurityGroupIDs, c.UserData, c.BlockDevices = slices.Clone(t.SecurityGroupIDs), slices.Clone(t.UserData), slices.Clone(t.BlockDevices)
	return c
}

// template finds a template by id or name. Callers hold mu.
func (l *launchState) template(id, name string) *LaunchTemplate {
	for _, t := range l.templates {
		if (id != "" && t.ID == id) || (name != "" && t.Name == name) {
			return t
		}
	}
	return nil
}

type xmlLaunchTemplate struct {
	LaunchTemplateID     string        `xml:"launchTemplateId"`
	LaunchTemplateName   string        `xml:"launchTemplateName"`
	CreateTime           string        `xml:"createTime"`
	CreatedBy            string        `xml:"createdBy"`
	DefaultVersionNumber int           `xml:"defaultVersionNumber"`
	LatestVersionNumber  int           `xml:"latestVersionNumber"`
	TagSet               Items[xmlTag] `xml:"tagSet"`
}

func (s *Server) launchTemplateXML(t *LaunchTemplate) xmlLaunchTemplate {
	return xmlLaunchTemplate{
		LaunchTemplateID: t.ID, LaunchTemplateName: t.Name, CreateTime: timestamp(t.CreateTime),
		CreatedBy:            "arn:aws:iam::" + s.model.AccountID() + ":root",
		DefaultVersionNumber: 1, LatestVersionNumber: 1, TagSet: tagSet(t.Tags),
	}
}

type launchTemplateResponse struct {
	LaunchTemplate xmlLaunchTemplate `xml:"launchTemplate"`
}

func (s *Server) createLaunchTemplate(_ context.Context, r *Request) (any, error) {
	name := r.Get("LaunchTemplateName")
	if name == "" {
		return nil, Errorf(CodeMissingParameter, "The request must contain the parameter LaunchTemplateName")
	}
	if !launchTemplateName.MatchString(name) {
		return nil, Errorf(CodeLaunchTemplateNameMalformed, "A launch template name must be between 3 and 128 characters, and may contain letters, numbers, and the following characters: - ( ) . / _")
	}
	const d = "LaunchTemplateData."
	t := &LaunchTemplate{
		Name: name, ImageID: r.Get(d + "ImageId"), InstanceType: r.Get(d + "InstanceType"),
		InstanceProfile:    r.Get(d + "IamInstanceProfile.Name"),
		SecurityGroupIDs:   r.List(d + "SecurityGroupId"),
		MetadataHTTPTokens: r.Get(d + "MetadataOptions.HttpTokens"),
		Tags:               map[string]string{},
		InstanceTags:       map[string]string{},
		VolumeTags:         map[string]string{},
	}
	if arn := r.Get(d + "IamInstanceProfile.Arn"); arn != "" {
		if t.InstanceProfile != "" {
			return nil, Errorf(CodeInvalidParameterCombination, "Specify either the IAM instance profile name or ARN, not both")
		}
		t.InstanceProfile = arn
	}
	if t.InstanceType != "" {
		if _, ok := s.instanceType(t.InstanceType); !ok {
			return nil, Errorf(CodeInvalidParameterValue, "Invalid instance type %s", t.InstanceType)
		}
	}
	if ud := r.Get(d + "UserData"); ud != "" {
		raw, err := base64.StdEncoding.DecodeString(ud)
		if err != nil {
			return nil, Errorf(CodeUserDataMalformed, "Invalid BASE64 encoding of user data.")
		}
		if len(raw) > maxUserData {
			return nil, Errorf(CodeInvalidParameterValue, "User data is limited to %d bytes", maxUserData)
		}
		t.UserData = raw
	}
	known := map[string]bool{}
	for _, g := range s.model.SecurityGroups() {
		known[g.ID] = true
	}
	if err := requireKnown(t.SecurityGroupIDs, func(id string) bool { return known[id] }, CodeSecurityGroupNotFound, "security group"); err != nil {
		return nil, err
	}
	for _, n := range r.indices(d + "BlockDeviceMapping") {
		p := d + "BlockDeviceMapping." + strconv.Itoa(n) + "."
		b := BlockDevice{
			DeviceName: r.Get(p + "DeviceName"), VolumeType: r.Get(p + "Ebs.VolumeType"),
			KMSKeyID: r.Get(p + "Ebs.KmsKeyId"), SnapshotID: r.Get(p + "Ebs.SnapshotId"), DeleteOnTermination: true,
		}
		if b.DeviceName == "" {
			return nil, Errorf(CodeMissingParameter, "The request must contain the parameter BlockDeviceMapping.%d.DeviceName", n)
		}
		var err error
		for _, f := range []struct {
			name string
			dst  *int
		}{{"VolumeSize", &b.VolumeSizeGiB}, {"Iops", &b.IOPS}, {"Throughput", &b.Throughput}} {
			if *f.dst, _, err = r.Int(p + "Ebs." + f.name); err != nil {
				return nil, err
			}
		}
		if v, ok, err := r.Bool(p + "Ebs.Encrypted"); err != nil {
			return nil, err
		} else if ok {
			b.Encrypted = v
		}
		if v, ok, err := r.Bool(p + "Ebs.DeleteOnTermination"); err != nil {
			return nil, err
		} else if ok {
			b.DeleteOnTermination = v
		}
		t.BlockDevices = append(t.BlockDevices, b)
	}
	for _, spec := range tagSpecs(r, d+"TagSpecification") {
		switch spec.ResourceType {
		case "instance":
			addTags(t.InstanceTags, spec.Tags)
		case "volume":
			addTags(t.VolumeTags, spec.Tags)
		default:
			return nil, Errorf(CodeInvalidParameterValue, "The resource type %q is not supported in a launch template's tag specifications", spec.ResourceType)
		}
	}
	for _, spec := range r.TagSpecifications() {
		if spec.ResourceType != "launch-template" {
			return nil, Errorf(CodeInvalidParameterValue, "'%s' is not a valid taggable resource type for this operation.", spec.ResourceType)
		}
		addTags(t.Tags, spec.Tags)
	}

	t.ID = s.launch.nextID("lt")
	l := s.launch
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.template("", name) != nil {
		return nil, Errorf(CodeLaunchTemplateNameExists, "Launch template name already in use.")
	}
	t.CreateTime = l.now().UTC()
	l.templates = append(l.templates, t)
	return launchTemplateResponse{LaunchTemplate: s.launchTemplateXML(t)}, nil
}

// tagSpecs reads TagSpecification-shaped lists under any prefix.
func tagSpecs(r *Request, prefix string) []TagSpecification {
	var out []TagSpecification
	for _, n := range r.indices(prefix) {
		p := prefix + "." + strconv.Itoa(n)
		spec := TagSpecification{ResourceType: r.Get(p + ".ResourceType")}
		for _, m := range r.indices(p + ".Tag") {
			k := p + ".Tag." + strconv.Itoa(m)
			spec.Tags = append(spec.Tags, Tag{Key: r.Get(k + ".Key"), Value: r.Get(k + ".Value")})
		}
		out = append(out, spec)
	}
	return out
}

func addTags(dst map[string]string, tags []Tag) {
	for _, t := range tags {
		dst[t.Key] = t.Value
	}
}

type describeLaunchTemplatesResponse struct {
	LaunchTemplates Items[xmlLaunchTemplate] `xml:"launchTemplates"`
	NextToken       string                   `xml:"nextToken,omitempty"`
}

func (s *Server) describeLaunchTemplates(_ context.Context, r *Request) (any, error) {
	ids, names := r.List("LaunchTemplateId"), r.List("LaunchTemplateName")
	s.launch.mu.Lock()
	all := slices.Clone(s.launch.templates)
	s.launch.mu.Unlock()
	for _, id := range ids {
		if !slices.ContainsFunc(all, func(t *LaunchTemplate) bool { return t.ID == id }) {
			return nil, Errorf(CodeLaunchTemplateIDNotFound, "At least one of the launch templates specified in the request does not exist.")
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(all, func(t *LaunchTemplate) bool { return t.Name == n }) {
			return nil, Errorf(CodeLaunchTemplateNameNotFound, "At least one of the launch templates specified in the request does not exist.")
		}
	}
	if len(ids) > 0 || len(names) > 0 {
		all = slices.DeleteFunc(all, func(t *LaunchTemplate) bool {
			return !slices.Contains(ids, t.ID) && !slices.Contains(names, t.Name)
		})
	}
	all, err := applyFilters(all, r.Filters(), fieldFuncs[*LaunchTemplate]{
		"launch-template-name": func(t *LaunchTemplate) []string { return one(t.Name) },
		"create-time":          func(t *LaunchTemplate) []string { return one(timestamp(t.CreateTime)) },
	}, func(t *LaunchTemplate) map[string]string { return t.Tags })
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, all, pageLimits{min: 1, max: 200})
	if err != nil {
		return nil, err
	}
	out := make([]xmlLaunchTemplate, len(page))
	for i, t := range page {
		out[i] = s.launchTemplateXML(t)
	}
	return describeLaunchTemplatesResponse{LaunchTemplates: ItemsOf(out), NextToken: next}, nil
}

func (s *Server) deleteLaunchTemplate(_ context.Context, r *Request) (any, error) {
	id, name := r.Get("LaunchTemplateId"), r.Get("LaunchTemplateName")
	if id == "" && name == "" {
		return nil, Errorf(CodeMissingParameter, "The request must contain the parameter LaunchTemplateName or LaunchTemplateId")
	}
	l := s.launch
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.templates, func(t *LaunchTemplate) bool {
		return (id == "" || t.ID == id) && (name == "" || t.Name == name)
	})
	if i < 0 {
		if id != "" {
			return nil, Errorf(CodeLaunchTemplateIDNotFound, "The specified launch template, with template ID %s, does not exist.", id)
		}
		return nil, Errorf(CodeLaunchTemplateNameNotFound, "The specified launch template, with template name %s, does not exist.", name)
	}
	t := l.templates[i]
	l.templates = slices.Delete(l.templates, i, i+1)
	return launchTemplateResponse{LaunchTemplate: s.launchTemplateXML(t)}, nil
}
