# servicehub authenticates the user in front of the container (Apache + OIDC, then Traefik
# routes by the trusted user header to this one container), so JupyterLab asks for nothing.
c = get_config()  # noqa: F821 (provided by Jupyter when it loads this file)

c.ServerApp.open_browser = False
c.IdentityProvider.token = ""
c.ServerApp.password = ""
# Reached through the hub under its public host name, not as localhost.
c.ServerApp.allow_remote_access = True
# Stop promptly on SIGTERM (the reaper's teardown), without the "shut down? (y/n)" prompt.
c.ServerApp.shutdown_no_activity_timeout = 0
c.ServerApp.quit_button = False
# No update checks or news feed from inside the container: nothing to reach, nothing polled.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
# Extensions come with the image, not from PyPI at run time (and its client needs the network).
c.LabApp.extension_manager = "readonly"
