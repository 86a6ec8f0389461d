from django.contrib.auth import views as auth_views
from django.urls import path

from jobs.web import views

urlpatterns = [
    path("", views.live_page, name="app"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="jobs/web/login.html", next_page="app", redirect_authenticated_user=True
        ),
        name="app-login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="app-login"), name="app-logout"),
]
