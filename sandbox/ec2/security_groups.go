package ec2

import (
	"context"
	"slices"

	"github.com/autonode/autonode/sandbox/vpc"
)

type xmlSecurityGroup struct {
	OwnerID          string        `xml:"ownerId"`
	GroupID          string        `xml:"groupId"`
	GroupName        string        `xml:"groupName"`
	GroupDescription string        `xml:"groupDescription"`
	VpcID            string        `xml:"vpcId"`
	SecurityGroupArn string        `xml:"securityGroupArn"`
	TagSet           Items[xmlTag] `xml:"tagSet"`
}

type describeSecurityGroupsResponse struct {
	SecurityGroupInfo Items[xmlSecurityGroup] `xml:"securityGroupInfo"`
	NextToken         string                  `xml:"nextToken,omitempty"`
}

func (s *Server) describeSecurityGroups(_ context.Context, r *Request) (any, error) {
	groups := s.model.SecurityGroups()
	ids, names := r.List("GroupId"), r.List("GroupName")
	if err := requireKnown(ids, func(id string) bool {
		return slices.ContainsFunc(groups, func(g vpc.SecurityGroup) bool { return g.ID == id })
	}, CodeSecurityGroupNotFound, "security group"); err != nil {
		return nil, err
	}
	if err := requireKnown(names, func(n string) bool {
		return slices.ContainsFunc(groups, func(g vpc.SecurityGroup) bool { return g.Name == n })
	}, CodeSecurityGroupNotFound, "security group"); err != nil {
		return nil, err
	}
	if len(ids) > 0 || len(names) > 0 {
		groups = slices.DeleteFunc(groups, func(g vpc.SecurityGroup) bool {
			return !slices.Contains(ids, g.ID) && !slices.Contains(names, g.Name)
		})
	}
	groups, err := applyFilters(groups, r.Filters(), fieldFuncs[vpc.SecurityGroup]{
		"group-id":    func(g vpc.SecurityGroup) []string { return one(g.ID) },
		"group-name":  func(g vpc.SecurityGroup) []string { return one(g.Name) },
		"description": func(g vpc.SecurityGroup) []string { return one(g.Description) },
		"vpc-id":      func(g vpc.SecurityGroup) []string { return one(g.VPCID) },
	}, func(g vpc.SecurityGroup) map[string]string { return g.Tags })
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, groups, pageLimits{min: 5, max: 1000})
	if err != nil {
		return nil, err
	}
	account, region := s.model.AccountID(), s.model.Region()
	out := make([]xmlSecurityGroup, len(page))
	for i, g := range page {
		out[i] = xmlSecurityGroup{
			OwnerID: account, GroupID: g.ID, GroupName: g.Name, GroupDescription: g.Description, VpcID: g.VPCID,
			SecurityGroupArn: "arn:aws:ec2:" + region + ":" + account + ":security-group/" + g.ID, TagSet: tagSet(g.Tags),
		}
	}
	return describeSecurityGroupsResponse{SecurityGroupInfo: ItemsOf(out), NextToken: next}, nil
}
