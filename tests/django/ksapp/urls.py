from __future__ import annotations

from django.contrib import admin
from django.urls import path

from ksapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("keys/<int:pk>", views.has_key),
    path("async-keys/<int:pk>", views.has_key_async),
    path("stream/<int:pk>", views.streamed),
    path("direct-async/<int:pk>", views.direct_async),
    path("plain", views.plain),
    path("signs-in/<int:pk>", views.signs_in_itself),
]
