"""render: the artifact's root (site/ and app/) from the plan and the
contract, and the templates the targets render their files with."""
