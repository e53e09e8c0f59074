"""The replica web server: the unit the load balancer starts, routes to and replaces."""
