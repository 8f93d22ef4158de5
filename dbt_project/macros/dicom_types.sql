{# Casts from DICOM text values (raw) to typed values (stage), per adapter. #}

{% macro dicom_number(column) -%}
    {{ return(adapter.dispatch('dicom_number', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_number(column) -%}
    try_cast(nullif(trim({{ column }}), '') as double)
{%- endmacro %}

{% macro dicom_integer(column) -%}
    {{ return(adapter.dispatch('dicom_integer', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_integer(column) -%}
    try_cast(nullif(trim({{ column }}), '') as bigint)
{%- endmacro %}

{% macro dicom_number_list(column) -%}
    {{ return(adapter.dispatch('dicom_number_list', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_number_list(column) -%}
    list_transform({{ column }}, lambda x: try_cast(nullif(trim(x), '') as double))
{%- endmacro %}

{# DA: YYYYMMDD (also the old YYYY.MM.DD form) #}
{% macro dicom_date(column) -%}
    {{ return(adapter.dispatch('dicom_date', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_date(column) -%}
    try_strptime(replace(nullif(trim({{ column }}), ''), '.', ''), '%Y%m%d')::date
{%- endmacro %}

{# TM: HHMMSS.FFFFFF, any trailing part may be missing (also old HH:MM:SS) #}
{% macro dicom_time(column) -%}
    {{ return(adapter.dispatch('dicom_time', 'dicom_etl')(column)) }}
{%- endmacro %}
{% macro default__dicom_time(column) -%}
    try_cast(
        case
            when {{ column }} is null or trim({{ column }}) = '' then null
            else
                substr(rpad(split_part(replace(trim({{ column }}), ':', ''), '.', 1), 6, '0'), 1, 2) || ':' ||
                substr(rpad(split_part(replace(trim({{ column }}), ':', ''), '.', 1), 6, '0'), 3, 2) || ':' ||
                substr(rpad(split_part(replace(trim({{ column }}), ':', ''), '.', 1), 6, '0'), 5, 2) ||
                case when strpos(trim({{ column }}), '.') > 0
                     then '.' || split_part(trim({{ column }}), '.', 2) else '' end
        end as time)
{%- endmacro %}
