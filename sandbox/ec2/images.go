package ec2

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"time"
)

// CodeImageNotFound is EC2's code for unknown AMI ids.
const CodeImageNotFound = "InvalidAMIID.NotFound"

// Image is an AMI that DescribeImages serves and CreateFleet may boot.
type Image struct {
	ID           string
	Name         string
	Description  string
	OwnerID      string
	OwnerAlias   string // amazon for AWS-owned images, else empty
	Architecture string // x86_64 or arm64
	CreationDate time.Time
	Public       bool
	Tags         map[string]string
}

// AmazonOwnerID owns the Amazon images of DefaultImages.
const AmazonOwnerID = "137112412989"

// DefaultImages returns the images the sandbox serves unless told otherwise:
// three releases (v1.0.0, v1.1.0, v1.2.0, a month apart, newest on
// 2026-11-01) of the autonode Bottlerocket variant for x86_64 and arm64,
// owned by account and named as twoliter names variant AMIs
// (autonode-aws-k8s-1.37-x86_64-v1.2.0-<hash>), plus one public Bottlerocket
// image per architecture owned by Amazon, which alias resolution must skip.
func DefaultImages(account string) []Image {
	var out []Image
	newest := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for i, version := range []string{"v1.0.0", "v1.1.0", "v1.2.0"} {
		for _, arch := range []string{"x86_64", "arm64"} {
			out = append(out, Image{
				Name:         VariantImageName(arch, version),
				Description:  "autonode Bottlerocket variant " + version,
				OwnerID:      account,
				Architecture: arch,
				CreationDate: newest.AddDate(0, i-2, 0),
				Tags:         map[string]string{"autonode.dev/variant": "aws-k8s-1.37", "autonode.dev/version": version},
			})
		}
	}
	for _, arch := range []string{"x86_64", "arm64"} {
		out = append(out, Image{
			Name:        "bottlerocket-aws-k8s-1.37-" + arch + "-v1.50.0-5d9ac849",
			Description: "bottlerocket-aws-k8s-1.37-" + arch + "-v1.50.0-5d9ac849",
			OwnerID:     AmazonOwnerID, OwnerAlias: "amazon", Public: true,
			Architecture: arch, CreationDate: newest.AddDate(0, 0, 10),
		})
	}
	for i := range out {
		out[i].ID = imageID(out[i].Name)
	}
	return out
}

// VariantImageName is the name of an autonode variant AMI for an EC2
// architecture and release.
func VariantImageName(arch, version string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(arch + version)) // hash writes cannot fail
	return fmt.Sprintf("autonode-aws-k8s-1.37-%s-%s-%08x", arch, version, h.Sum32())
}

// imageID derives a stable AMI id from a name.
func imageID(name string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return fmt.Sprintf("ami-0%016x", h.Sum64()>>4)
}

// AddImage registers an image (a new release, say); its id is derived from
// its name when empty. It returns the image as stored.
func (s *Server) AddImage(img Image) Image {
	if img.ID == "" {
		img.ID = imageID(img.Name)
	}
	img.Tags = maps.Clone(img.Tags)
	s.launch.mu.Lock()
	defer s.launch.mu.Unlock()
	s.launch.images = append(s.launch.images, img)
	return img
}

// image returns the image with id. Callers hold mu.
func (l *launchState) image(id string) (Image, bool) {
	i := slices.IndexFunc(l.images, func(img Image) bool { return img.ID == id })
	if i < 0 {
		return Image{}, false
	}
	return l.images[i], true
}

type xmlImage struct {
	ImageID            string        `xml:"imageId"`
	ImageLocation      string        `xml:"imageLocation"`
	ImageState         string        `xml:"imageState"`
	ImageOwnerID       string        `xml:"imageOwnerId"`
	ImageOwnerAlias    string        `xml:"imageOwnerAlias,omitempty"`
	CreationDate       string        `xml:"creationDate"`
	IsPublic           bool          `xml:"isPublic"`
	Architecture       string        `xml:"architecture"`
	ImageType          string        `xml:"imageType"`
	Name               string        `xml:"name"`
	Description        string        `xml:"description"`
	RootDeviceType     string        `xml:"rootDeviceType"`
	RootDeviceName     string        `xml:"rootDeviceName"`
	VirtualizationType string        `xml:"virtualizationType"`
	Hypervisor         string        `xml:"hypervisor"`
	EnaSupport         bool          `xml:"enaSupport"`
	TagSet             Items[xmlTag] `xml:"tagSet"`
}

type describeImagesResponse struct {
	ImagesSet Items[xmlImage] `xml:"imagesSet"`
	NextToken string          `xml:"nextToken,omitempty"`
}

func (s *Server) describeImages(_ context.Context, r *Request) (any, error) {
	account := s.model.AccountID()
	s.launch.mu.Lock()
	images := slices.Clone(s.launch.images)
	s.launch.mu.Unlock()
	if ids := r.List("ImageId"); len(ids) > 0 {
		if err := requireKnown(ids, func(id string) bool {
			return slices.ContainsFunc(images, func(img Image) bool { return img.ID == id })
		}, CodeImageNotFound, "image id"); err != nil {
			return nil, err
		}
		images = slices.DeleteFunc(images, func(img Image) bool { return !slices.Contains(ids, img.ID) })
	}
	if owners := r.List("Owner"); len(owners) > 0 {
		images = slices.DeleteFunc(images, func(img Image) bool {
			return !slices.ContainsFunc(owners, func(o string) bool {
				return o == img.OwnerID || (o == "self" && img.OwnerID == account) || (o != "" && o == img.OwnerAlias)
			})
		})
	}
	images, err := applyFilters(images, r.Filters(), fieldFuncs[Image]{
		"image-id":     func(i Image) []string { return one(i.ID) },
		"name":         func(i Image) []string { return one(i.Name) },
		"description":  func(i Image) []string { return one(i.Description) },
		"architecture": func(i Image) []string { return one(i.Architecture) },
		"owner-id":     func(i Image) []string { return one(i.OwnerID) },
		"owner-alias":  func(i Image) []string { return one(i.OwnerAlias) },
		"state":        func(Image) []string { return one("available") },
		"image-type":   func(Image) []string { return one("machine") },
		"is-public":    func(i Image) []string { return one(strconv.FormatBool(i.Public)) },
	}, func(i Image) map[string]string { return i.Tags })
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, images, pageLimits{min: 5, max: 1000})
	if err != nil {
		return nil, err
	}
	out := make([]xmlImage, len(page))
	for i, img := range page {
		out[i] = xmlImage{
			ImageID: img.ID, ImageLocation: img.OwnerID + "/" + img.Name, ImageState: "available",
			ImageOwnerID: img.OwnerID, ImageOwnerAlias: img.OwnerAlias, CreationDate: timestamp(img.CreationDate),
			IsPublic: img.Public, Architecture: img.Architecture, ImageType: "machine", Name: img.Name,
			Description: img.Description, RootDeviceType: "ebs", RootDeviceName: "/dev/xvda",
			VirtualizationType: "hvm", Hypervisor: "xen", EnaSupport: true, TagSet: tagSet(img.Tags),
		}
	}
	return describeImagesResponse{ImagesSet: ItemsOf(out), NextToken: next}, nil
}
