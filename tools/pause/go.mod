module jupyterhub-canary/tools/pause

go 1.22
